"""SQLite's connection settings: our own BEGIN, WAL, busy timeout."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, event

__all__ = ["configure_sqlite"]


def configure_sqlite(engine: Engine, *, memory: bool, busy_ms: int) -> None:
    """Our own BEGIN (IMMEDIATE for writes: no lock upgrade can fail), WAL, busy timeout."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        if not memory:
            _wal(cursor, busy_ms)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("muxi_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _wal(cursor: Any, busy_ms: int) -> None:
    """Switch the file to WAL. The first switch needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy handler, while another process is
    opening the same new file: retry within the busy timeout."""
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3's or the aiosqlite adapter's OperationalError
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
