"""The three servers ``bench/load.py`` compares, each run as its own process:

    python bench/_load_servers.py {ours,bare,plain} --config muxi.yaml --port 8001

``ours``   ``muxi-isolation serve``: the CLI's own code path, unchanged.
``bare``   the same reference app (``create_app``: same routes, agent, ``Isolation`` and
           storage) with the isolation middleware taken out: ``MuxiIsolationMiddleware``,
           ``AuditEdge``, ``AuditActor`` and ``RateLimit`` give way to one that parses
           ``X-Muxi-User-Id`` and checks no key (the request deadline stays).
``plain``  the same chat app written without the library: the same routes and JSON, the
           demo agent's rules (``parse_fact``), the same database kind, driver and
           settings (SQLAlchemy async over aiosqlite or psycopg, WAL, ``BEGIN IMMEDIATE``
           to write), three tables keyed by tenant and user, one transaction per request,
           no key check, no policy, no RLS, no audit trail.

Every variant counts what goes through SQLAlchemy (transactions begun, commits, rollbacks,
statements) in this process, and writes the counts as JSON to ``$MUXI_LOAD_COUNTS`` on
SIGUSR1, so the bench reads the per-request figures from outside without a route of ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

COUNTS: Counter[str] = Counter()


def _count(name: str) -> Any:
    def listener(*_args: Any, **_kwargs: Any) -> None:
        COUNTS[name] += 1

    return listener


def install_counters() -> None:
    """Count on every engine this process makes (sync, and async through its sync engine)."""
    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, _count(name))
    event.listen(Engine, "before_cursor_execute", _count("statements"))
    target = os.environ.get("MUXI_LOAD_COUNTS")
    if target:

        def dump(_signum: int, _frame: Any) -> None:
            COUNTS["dumps"] += 1
            Path(target + ".tmp").write_text(json.dumps(dict(COUNTS)))
            os.replace(target + ".tmp", target)

        signal.signal(signal.SIGUSR1, dump)


# -- bare: the reference app without the isolation middleware ---------------------------------


def bare_app(config_path: str) -> Any:
    """The reference app as ``muxi-isolation serve`` builds it, minus the isolation layer."""
    from starlette.middleware import Middleware

    from muxi_isolation._edge import Deadline
    from muxi_isolation.agent import DemoAgent
    from muxi_isolation.config import load_config
    from muxi_isolation.facade import Isolation
    from muxi_isolation.http import SCOPE_KEY
    from muxi_isolation.keys import KeyRing
    from muxi_isolation.scope import Scope
    from muxi_isolation.server import create_app

    class HeaderScope:
        """The user the header names, taken on trust: no key, no grant, no audit, no quota."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                raw = dict(scope["headers"]).get(b"x-muxi-user-id")
                user = Scope.parse(None if raw is None else raw.decode())
                scope = {**scope, SCOPE_KEY: user}
            await self.app(scope, receive, send)

    config = load_config(Path(config_path))
    deadline = config.server.request_timeout
    isolation = Isolation.from_config(config, statement_timeout=deadline)
    keys = KeyRing.from_config(config.auth)
    app = create_app(isolation, keys, DemoAgent(), close_on_shutdown=True, request_timeout=deadline)
    # Starlette builds its middleware stack on the first request: swap the list before it.
    kept = [m for m in app.user_middleware if m.cls is Deadline]
    app.user_middleware = [*kept, Middleware(HeaderScope)]
    return app


def serve_bare(config_path: str, port: int) -> int:
    from muxi_isolation.server import run_server

    app = bare_app(config_path)
    with contextlib.suppress(KeyboardInterrupt):
        run_server(app, "127.0.0.1", port)
    return 0


# -- plain: the same chat app without the library -----------------------------------------------

SESSION_TIMEOUT = timedelta(minutes=30)
HISTORY_WINDOW = 50
meta = MetaData()
sessions = Table(
    "plain_sessions",
    meta,
    Column("tenant_id", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_active_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
messages = Table(
    "plain_messages",
    meta,
    Column("tenant_id", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("session_id", String(255), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("role", String(32), nullable=False),
    Column("content", Text, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
memories = Table(
    "plain_memories",
    meta,
    Column("tenant_id", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("content", Text, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def plain_engine(url: str) -> AsyncEngine:
    """The driver and settings ``SQLBackend`` uses for the same URL."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://", 1))

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 5000")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            write = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    async_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_async_engine(async_url, connect_args={"prepare_threshold": None})


def plain_app(url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from muxi_isolation.agent import UNKNOWN_PREFERENCE, parse_fact

    engine = plain_engine(url)

    def who(request: Request) -> tuple[str, str]:
        tenant, sep, user = request.headers.get("x-muxi-user-id", "0").partition(":")
        return (tenant, user) if sep else ("default", tenant)

    async def chat(request: Request) -> Response:
        tenant, user = who(request)
        data = await request.json()
        text, session_id = data["message"], data.get("session_id")
        now = datetime.now(timezone.utc)
        mine = (tenant, user)
        async with engine.connect() as conn:
            conn = await conn.execution_options(write=True)
            async with conn.begin():
                seq = 0
                if session_id is None:
                    session_id = uuid.uuid4().hex
                    row = dict(tenant_id=tenant, user_id=user, id=session_id, created_at=now)
                    row |= dict(last_active_at=now, expires_at=now + SESSION_TIMEOUT)
                    await conn.execute(insert(sessions).values(**row))
                else:
                    found = await conn.execute(
                        select(sessions.c.expires_at).where(
                            sessions.c.tenant_id == tenant,
                            sessions.c.user_id == user,
                            sessions.c.id == session_id,
                        )
                    )
                    expires = found.scalar()
                    if expires is None or _aware(expires) <= now:
                        body = {"error": "session_not_found", "message": "no such session"}
                        return JSONResponse(body, status_code=404)
                    history = await conn.execute(
                        select(messages.c.seq, messages.c.role, messages.c.content)
                        .where(
                            messages.c.tenant_id == tenant,
                            messages.c.user_id == user,
                            messages.c.session_id == session_id,
                        )
                        .order_by(messages.c.seq.desc())
                        .limit(HISTORY_WINDOW)
                    )
                    rows = history.all()
                    seq = rows[0].seq + 1 if rows else 0
                answer = await respond(conn, mine, text, now)
                await conn.execute(
                    insert(messages),
                    [
                        dict(tenant_id=tenant, user_id=user, session_id=session_id, seq=seq,
                             role="user", content=text, metadata=data.get("metadata") or {},
                             created_at=now),
                        dict(tenant_id=tenant, user_id=user, session_id=session_id,
                             seq=seq + 1, role="assistant", content=answer, metadata={},
                             created_at=now),
                    ],
                )  # fmt: skip
                await conn.execute(
                    update(sessions)
                    .where(
                        sessions.c.tenant_id == tenant,
                        sessions.c.user_id == user,
                        sessions.c.id == session_id,
                    )
                    .values(last_active_at=now, expires_at=now + SESSION_TIMEOUT)
                )
        body = {"session_id": session_id, "user_id": request.headers.get("x-muxi-user-id")}
        return JSONResponse(body | {"response": answer})

    async def respond(conn: Any, mine: tuple[str, str], text: str, now: datetime) -> str:
        """``DemoAgent.respond`` for the sentences the load sends, on this connection."""
        parsed = parse_fact(text)
        if parsed is None:
            return "Hello!"
        action, fact = parsed
        tenant, user = mine
        if action == "tell":
            metadata = {"kind": fact.kind, "topic": fact.topic, "value": fact.value}
            row = dict(tenant_id=tenant, user_id=user, id=uuid.uuid4().hex)
            row |= dict(content=fact.content, metadata=metadata, created_at=now)
            await conn.execute(insert(memories).values(**row))
            return f"Got it. I'll remember that you like {fact.value}."
        query = select(memories.c.metadata).where(
            memories.c.tenant_id == tenant, memories.c.user_id == user
        )
        for key, value in fact.filter().items():
            query = query.where(memories.c.metadata[key].as_string() == value)
        found = [str(m["value"]) for (m,) in await conn.execute(query.order_by(memories.c.id))]
        distinct = list(dict.fromkeys(found))
        if not distinct:
            return UNKNOWN_PREFERENCE
        return f"You like {', '.join(distinct)}."

    async def history(request: Request) -> Response:
        tenant, user = who(request)
        session_id = request.path_params["session_id"]
        async with engine.connect() as conn, conn.begin():
            found = await conn.execute(
                select(sessions).where(
                    sessions.c.tenant_id == tenant,
                    sessions.c.user_id == user,
                    sessions.c.id == session_id,
                )
            )
            record = found.mappings().first()
            if record is None or _aware(record["expires_at"]) <= datetime.now(timezone.utc):
                body = {"error": "session_not_found", "message": "no such session"}
                return JSONResponse(body, status_code=404)
            rows = await conn.execute(
                select(messages.c.seq, messages.c.role, messages.c.content, messages.c.metadata)
                .where(
                    messages.c.tenant_id == tenant,
                    messages.c.user_id == user,
                    messages.c.session_id == session_id,
                )
                .order_by(messages.c.seq)
            )
            listed = [dict(m) for m in rows.mappings()]
        return JSONResponse({"id": session_id, "user_id": user, "messages": listed})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def lifespan(app: Any) -> Any:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        yield
        await engine.dispose()

    routes = [
        Route("/v1/chat", chat, methods=["POST"]),
        Route("/v1/sessions/{session_id:path}", history, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    from contextlib import asynccontextmanager

    return Starlette(routes=routes, lifespan=asynccontextmanager(lifespan))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def serve_plain(config_path: str, port: int) -> int:
    import uvicorn

    config = yaml.safe_load(Path(config_path).read_text())
    url = config["memory"]["persistent"]["connection_string"]
    app = plain_app(url)
    # As ``run_server`` configures uvicorn for ours (its access log included).
    options = dict(host="127.0.0.1", port=port, ws="none", lifespan="on", log_level="info")
    server = uvicorn.Server(uvicorn.Config(app, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=["ours", "bare", "plain"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    install_counters()
    if args.variant == "ours":
        from muxi_isolation.cli import main as cli

        return cli(["serve", "--config", args.config, "--port", str(args.port)])
    if args.variant == "bare":
        return serve_bare(args.config, args.port)
    return serve_plain(args.config, args.port)


if __name__ == "__main__":
    sys.exit(main())
