"""What a SQL backend sends, watched from outside (tests only): every engine of a backend,
listeners that are always removed, the statements SQLAlchemy executes, the statements SQLite
itself runs and libpq's trace of PostgreSQL's round trips."""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.util import await_only

from muxi_isolation.stores.sql import SQLBackend

__all__ = [
    "engines",
    "executed",
    "listening",
    "postgres_round_trips",
    "round_trips",
    "sent_sql",
    "sqlite_trace",
]


def engines(backend: SQLBackend) -> list[Engine]:
    """The backend's engines, each once: readers and writers, the async ones' sync engines."""
    found = {id(e): e for e in (backend._engine, backend._writers[0])}
    for engine in (backend._aengine, backend._writers[1]):
        found[id(engine.sync_engine)] = engine.sync_engine
    return list(found.values())


@contextmanager
def listening(targets: Sequence[Any], name: str, fn: Callable[..., Any]) -> Iterator[None]:
    """``fn`` on event ``name`` of every target meanwhile."""
    for target in targets:
        event.listen(target, name, fn)
    try:
        yield
    finally:
        for target in targets:
            event.remove(target, name, fn)


@contextmanager
def executed(backend: SQLBackend) -> Iterator[list[str]]:
    """The statements SQLAlchemy executes meanwhile, on every engine of the backend."""
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    with listening(engines(backend), "before_cursor_execute", capture):
        yield sent


@contextmanager
def sqlite_trace(backend: SQLBackend) -> Iterator[list[str]]:
    """SQLite's own trace of every connection checked out meanwhile: each statement it runs,
    whoever sends it (SQLAlchemy, or the library on the DB-API connection), BEGIN, COMMIT
    and ROLLBACK included; an executemany once per row."""
    seen: list[str] = []

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        traced = record.driver_connection.set_trace_callback(seen.append)
        if inspect.isawaitable(traced):  # aiosqlite's, inside SQLAlchemy's greenlet
            await_only(traced)

    with listening([e.pool for e in engines(backend)], "checkout", checkout):
        yield seen


@contextmanager
def postgres_round_trips(backend: SQLBackend) -> Iterator[list[str]]:
    """libpq's trace of every connection used meanwhile, one per checkout."""
    counted: list[str] = []
    traces: dict[int, tuple[Any, int, str]] = {}

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        pgconn = record.driver_connection.pgconn
        fd, path = tempfile.mkstemp(prefix="muxi-trace-")
        pgconn.trace(fd)
        traces[id(record)] = (pgconn, fd, path)

    def checkin(_dbapi: Any, record: Any) -> None:
        found = traces.pop(id(record), None)
        if found is None:
            return
        pgconn, fd, path = found
        pgconn.untrace()  # flushes the trace
        with open(path) as trace:
            counted.append(trace.read())
        os.close(fd)
        os.unlink(path)

    pools = [engine.pool for engine in engines(backend)]
    with listening(pools, "checkout", checkout), listening(pools, "checkin", checkin):
        yield counted


_MESSAGE = re.compile(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")  # each starts with its time
_SENT = re.compile(
    r'\tF\t\d+\t(?:Parse\t "[^"]*" "(?P<parse>.*)" \d+(?: \d+)*|Query\t "(?P<query>.*)")$', re.S
)


def sent_sql(traces: list[str]) -> list[str]:
    """The SQL of every statement the client sent in libpq's traces (its Parse and Query
    messages): whoever sent it, SQLAlchemy or a pipelined flight on the driver."""
    found = (_SENT.search(message.rstrip("\n")) for t in traces for message in _MESSAGE.split(t))
    return [
        m.group("parse") if m.group("parse") is not None else m.group("query") for m in found if m
    ]


def round_trips(traces: list[str]) -> list[int]:
    """Per checkout, the server's ``ReadyForQuery`` messages: one ends each round trip."""
    return [len(re.findall(r"\tB\t\d+\tReadyForQuery", t)) for t in traces]
