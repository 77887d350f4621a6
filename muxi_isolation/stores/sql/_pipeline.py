"""PostgreSQL: a scoped read in one network round trip (psycopg's pipeline mode).

Through SQLAlchemy a scoped read is four round trips, each waiting for the last: psycopg's
BEGIN, ``scope_enter``, the statement, COMMIT (SQLAlchemy reads a result's description at
once, which pipeline mode leaves empty until a sync). Here the four are queued on the
pooled psycopg connection and sent with one Sync. The server runs them in order and skips
everything after the first error, so the statement never runs without its scope, and an
aborted transaction is rolled back, never committed. For that flight only the connection
is in autocommit (else psycopg sends a BEGIN of its own and waits for it); it is left as it
was found: outside a transaction, autocommit off. A connection that cannot be put back so
is invalidated: the pool never hands it out again.

SQLAlchemy still owns the connection (the pool, its checkout and reset, its transaction,
which finds nothing left to commit); ``scoped()`` opens the usual scoped transaction on it
for a call that needs more than one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.util import await_only

from . import _errors, _rls
from ._driver import Driver
from ._scope_key import StaleKey

__all__ = ["Flight", "Pipelined", "supported"]

Rows = list[dict[str, Any]]
Processors = tuple[Callable[[Any], Any] | None, ...]
Answer = tuple[list[tuple[Any, ...]], tuple[int, ...]]  # rows, their columns' type oids


@dataclass(frozen=True)
class Flight:
    """A statement compiled once to psycopg's SQL (``Driver``), with its columns' names and
    types and their result processors (by the types the server answered with, as
    SQLAlchemy keys them)."""

    driver: Driver
    keys: tuple[str, ...]
    types: tuple[Any, ...]
    dialect: Dialect
    results: dict[tuple[int, ...], Processors] = field(default_factory=dict)

    @classmethod
    def of(cls, stmt: Any, dialect: Dialect) -> Flight:
        columns = list(stmt.selected_columns)
        keys, types = tuple(c.key for c in columns), tuple(c.type for c in columns)
        return cls(Driver.of(dialect, stmt), keys, types, dialect)

    def decode(self, rows: list[tuple[Any, ...]], oids: tuple[int, ...]) -> Rows:
        processors = self.results.get(oids)
        if processors is None:
            d = self.dialect
            made = (
                t.dialect_impl(d).result_processor(d, o)
                for t, o in zip(self.types, oids, strict=True)
            )
            processors = self.results[oids] = tuple(made)
        keys = self.keys
        return [
            {k: v if p is None else p(v) for k, p, v in zip(keys, processors, row, strict=True)}
            for row in rows
        ]


@dataclass(slots=True)
class Pipelined:
    """One call's connection (SQLAlchemy's, its transaction begun and nothing sent yet)
    and its scope: ``rows`` reads one statement in a transaction of its own opened for the
    scope, in one round trip; ``scoped`` opens the usual scoped transaction instead."""

    conn: Connection
    enter: tuple[str, dict[str, Any]]  # scope_enter, as psycopg's SQL and its parameters
    open_scope: Callable[[Connection], None]
    flights: dict[tuple[int, bool], tuple[Any, Flight]]  # by the statement's id, and half

    def rows(
        self, stmt: Any, params: Mapping[str, Any], settings: Mapping[str, str] | None = None
    ) -> Rows:
        """``stmt``'s rows; ``settings``: transaction-local settings made before it (bound
        ``set_config`` parameters, in the same flight)."""
        flight = self._flight(stmt)
        read = (flight.driver.sql, flight.driver.params(dict(params)))
        made = _settings(settings) if settings else ()
        queued = (("BEGIN", None), self.enter, *made, read, ("COMMIT", None))
        db = self.conn.connection.driver_connection
        failed, is_async = self.conn.dialect.loaded_dbapi.Error, self.conn.dialect.is_async
        try:
            if is_async:
                rows, oids = await_only(_afly(db, queued))
            else:
                rows, oids = _fly(db, queued)
        except failed as exc:
            if getattr(exc, "sqlstate", None) == _rls.STALE_KEY_STATE:
                raise StaleKey from exc
            error = _errors.from_driver(self.conn.dialect, exc, connection=db)
            if error.connection_invalidated or not _put_back(db, is_async):
                self.conn.invalidate(exc)
            raise error from exc
        except BaseException:  # interrupted mid-flight: the connection's state is unknown
            self.conn.invalidate()
            raise
        return flight.decode(rows, oids)

    def scoped(self) -> Connection:
        self.open_scope(self.conn)
        return self.conn

    def _flight(self, stmt: Any) -> Flight:
        dialect = self.conn.dialect  # psycopg's or psycopg's async: each its own processors
        key = (id(stmt), dialect.is_async)
        kept = self.flights.get(key)
        if kept is None or kept[0] is not stmt:
            kept = self.flights[key] = (stmt, Flight.of(stmt, dialect))
        return kept[1]


def _settings(settings: Mapping[str, str]) -> tuple[tuple[str, tuple[str, ...]]]:
    """One ``SELECT set_config(name, value, true), ...``: names and values as parameters."""
    calls = ", ".join(["set_config(%s, %s, true)"] * len(settings))
    return ((f"SELECT {calls}", tuple(x for item in settings.items() for x in item)),)


def _fly(db: Any, queued: tuple[tuple[str, Any], ...]) -> Answer:
    db.autocommit = True
    with db.pipeline():
        cursors = [db.execute(sql, params) for sql, params in queued]
    db.autocommit = False
    read = cursors[-2]
    return read.fetchall(), tuple(c.type_code for c in read.description)


async def _afly(db: Any, queued: tuple[tuple[str, Any], ...]) -> Answer:
    await db.set_autocommit(True)
    async with db.pipeline():
        cursors = [await db.execute(sql, params) for sql, params in queued]
    await db.set_autocommit(False)
    read = cursors[-2]
    return await read.fetchall(), tuple(c.type_code for c in read.description)


def _put_back(db: Any, is_async: bool) -> bool:
    """After a failed flight: roll back what is left of it and turn autocommit off again.
    ``False``: the connection could not be put back so (it is then dropped)."""
    try:
        if is_async:  # psycopg's AsyncConnection, from SQLAlchemy's greenlet
            await_only(db.rollback())
            await_only(db.set_autocommit(False))
        else:
            db.rollback()
            db.autocommit = False
    except Exception:  # any failure here: the connection is dropped
        return False
    return True


def supported() -> bool:
    """Whether psycopg can run a pipeline here: it needs libpq 14 or later (the one
    ``psycopg[binary]`` ships is); with an older one the reads take four round trips."""
    import psycopg

    capabilities = getattr(psycopg, "capabilities", None)  # psycopg 3.2 and later
    if capabilities is not None:
        return bool(capabilities.has_pipeline())
    return bool(psycopg.Pipeline.is_supported())  # pragma: no cover - psycopg 3.1
