"""The sync and async engines of one database, with their pool and connection events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from ...errors import AdapterUnavailable
from . import _bulk
from ._pool import discard_session_state, mark_checkout, mark_foreign
from ._sqlite import configure_sqlite
from ._types import register_vector_wire
from ._urls import Target

__all__ = ["dispose_elsewhere", "open_engines"]


def open_engines(
    target: Target, pool: dict[str, Any], busy_timeout: float, deadline: float | None = None
) -> tuple[Engine, AsyncEngine]:
    """A sync and an async engine; ``deadline`` (seconds) bounds every statement, lock wait
    and idle transaction on PostgreSQL, so a call past it is cancelled by the server and its
    transaction rolled back, never committed later."""
    options: dict[str, Any] = dict(pool)
    if target.dialect == "sqlite" and target.memory:
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif target.dialect == "sqlite" and options.get("poolclass") is NullPool:
        options = {"poolclass": NullPool}
    elif target.dialect == "postgresql":
        # No server-side prepared statements: a cached generic plan would not know which
        # user a search is for, and would pick one path for all of them.
        options["connect_args"] = {"prepare_threshold": None}
        if deadline is not None:
            ms = max(1, int(deadline * 1000))
            timeouts = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            given = target.sync_url.query.get("options")  # the URL's own -c settings stay
            mine = " ".join(f"-c {t}={ms}" for t in timeouts)
            options["connect_args"]["options"] = f"{given} {mine}" if given else mine
    try:
        sync_engine = create_engine(target.sync_url, **options)
        async_engine = create_async_engine(target.async_url, **options)
    except ModuleNotFoundError as exc:
        driver = "psycopg" if target.dialect == "postgresql" else str(exc.name)
        raise AdapterUnavailable(driver, "postgres") from exc
    if target.dialect == "sqlite":
        for engine in (sync_engine, async_engine.sync_engine):
            configure_sqlite(engine, memory=target.memory, busy_ms=int(busy_timeout * 1000))
    else:
        for engine in (sync_engine, async_engine.sync_engine):
            event.listen(engine, "connect", register_vector_wire)
            event.listen(engine, "connect", _bulk.register)
            event.listen(engine, "checkout", mark_checkout)
            event.listen(engine, "before_cursor_execute", mark_foreign)
            event.listen(engine, "reset", discard_session_state)
    return sync_engine, async_engine


def dispose_elsewhere(engine: AsyncEngine) -> None:
    """Close an async engine's pooled connections from sync code, on a loop of its own."""
    worker = threading.Thread(target=asyncio.run, args=(engine.dispose(),), daemon=True)
    worker.start()
    worker.join()
