"""How a call of the SQL backend becomes one transaction that opens for one scope.

``Transactions`` holds the engines (the app's, the single SQLite writer, the owner's
``admin_url``) and runs an operation's function on a connection of its own: on PostgreSQL
the transaction's first statement sets the row-level-security scope, transaction-locally.
The sync half runs on a sync engine; the async half on an async engine (aiosqlite, psycopg
async), with the same function driven through ``AsyncConnection.run_sync``. A ``driver``
call gets, on SQLite (the append, a search), the pooled DB-API connection itself instead
of SQLAlchemy's; on PostgreSQL (a search) a ``Pipelined``, which opens its scope, reads
and commits in one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, TextClause
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool, PoolProxiedConnection

from ...errors import ConfigError
from ...scope import Scope
from . import _errors, _rls
from ._engines import open_engines
from ._gate import Gate
from ._pipeline import Flight, Pipelined
from ._pool import claim
from ._schema import Tables
from ._scope_key import StaleKey, read_scope_key
from ._urls import Target

__all__ = ["EVERY_TENANT", "Call", "Transactions"]

log = logging.getLogger("muxi_isolation.stores.sql")
T = TypeVar("T")
EVERY_TENANT = ":every"  # never a tenant id (a tenant id cannot hold ":")


@dataclass(slots=True)  # not frozen: a frozen one costs four times as much to make
class Call(Generic[T]):
    """``fn(conn, *args)`` in one transaction of its own, opened for ``scope`` (row-level
    security), or with ``admin_tenant`` on the admin path; ``write``: on the writer;
    ``driver``: ``conn`` is SQLite's DB-API connection, not SQLAlchemy's, or on PostgreSQL
    a ``Pipelined`` (a scoped read in one round trip). Made once per call, for ``_run`` or
    ``_arun`` alike."""

    scope: Scope | None
    fn: Callable[..., T]
    args: tuple[Any, ...] = ()
    write: bool = False
    admin_tenant: str | None = None
    driver: bool = False


class Transactions:
    """The engines of one store, and each call in one transaction for one scope."""

    dialect: str
    tables: Tables
    citus: bool
    _target: Target

    def _open_engines(
        self,
        admin: Target | None,
        pool: dict[str, Any],
        busy_timeout: float,
        statement_timeout: float | None,
    ) -> None:
        self._gate = Gate(self._target.memory)
        if statement_timeout is not None:
            if not statement_timeout > 0:
                raise ConfigError("statement_timeout must be a positive number of seconds")
            busy_timeout = min(busy_timeout, statement_timeout)
            pool["pool_timeout"] = statement_timeout
        self._engine, self._aengine = open_engines(
            self._target, pool, busy_timeout, statement_timeout
        )
        self._writers = self._engine, self._aengine
        if self.dialect == "sqlite" and not self._target.memory:
            # One writer connection: SQLite lets one writer in at a time anyway, and writers
            # queued here hold no connection that a reader needs (WAL serves readers while a
            # writer holds the file's lock).
            single = {"pool_size": 1, "max_overflow": 0, "pool_timeout": busy_timeout}
            self._writers = open_engines(self._target, single, busy_timeout, statement_timeout)
        self._admin: tuple[Engine, AsyncEngine] | None = None
        if admin is not None:
            self._admin = open_engines(admin, {"poolclass": NullPool}, busy_timeout)
        self._enter_statement: TextClause | None = None
        self._enter_sql: str | None = None  # the same, as psycopg's SQL (``_pipelined``)
        self._flights: dict[tuple[int, bool], tuple[Any, Flight]] = {}
        self._scope_key: bytes | None = None

    def setup(self) -> None:
        raise NotImplementedError("setup")

    async def asetup(self) -> None:
        raise NotImplementedError("asetup")

    def _enter(self, conn: Connection, scope: Scope | None, admin_tenant: str | None) -> None:
        if self.dialect != "postgresql":
            return
        if admin_tenant is None:
            assert scope is not None and self._scope_key is not None
            statement = self._enter_statement
            assert statement is not None
            try:
                _rls.enter_scope(conn, statement, scope, self._scope_key, citus=self.citus)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == _rls.STALE_KEY_STATE:
                    raise StaleKey from exc
                raise
            return
        if admin_tenant == EVERY_TENANT:
            settings = {_rls.ADMIN: _rls.LIST_TENANTS}
        else:
            settings = {_rls.TENANT: admin_tenant, _rls.ADMIN: "on"}
        _rls.apply_settings(conn, settings, set_local=self.citus)

    def _call(self, conn: Connection, call: Call[T]) -> T:
        if call.driver and self.dialect == "postgresql":
            return call.fn(self._pipelined(conn, call.scope), *call.args)
        self._enter(conn, call.scope, call.admin_tenant)
        if call.driver:  # the async half: SQLAlchemy's transaction, the driver's statements
            with _from_driver(conn.dialect):
                return call.fn(conn.connection.dbapi_connection, *call.args)
        return call.fn(conn, *call.args)

    def _pipelined(self, conn: Connection, scope: Scope | None) -> Pipelined:
        """PostgreSQL's driver call: its statement and its scope in one round trip."""
        assert scope is not None and self._scope_key is not None and not self.citus
        if self._enter_sql is None:
            assert self._enter_statement is not None
            self._enter_sql = str(self._enter_statement.compile(dialect=conn.dialect))
        enter = (self._enter_sql, _rls.enter_params(scope, self._scope_key))
        return Pipelined(conn, enter, lambda c: self._enter(c, scope, None), self._flights)

    def _engines_for(self, call: Call[Any]) -> tuple[Engine, AsyncEngine]:
        """The admin path's engines, the single writer's, or the app's."""
        if call.admin_tenant is not None:
            return self._admin_engines()
        return self._writers if call.write else (self._engine, self._aengine)

    # ``_run`` and ``_arun`` are the one place where the sync and async I/O differ.

    def _run(self, call: Call[T]) -> T:
        try:
            return self._run_once(call)
        except StaleKey:  # the key was rotated and the old one dropped: read the new one
            self._refresh_key()
            return self._run_once(call)

    def _run_once(self, call: Call[T]) -> T:
        engine = self._engines_for(call)[0]
        self.setup()
        if call.driver and self.dialect == "sqlite":
            return self._run_on_driver(engine, call)
        with self._gate.hold(), _errors.mapped():
            with _errors.unavailable():
                conn = engine.connect()
            with conn:
                conn.execution_options(muxi_write=call.write)
                claim(conn)
                with conn.begin():
                    return self._call(conn, call)

    def _run_on_driver(self, engine: Engine, call: Call[T]) -> T:
        """SQLite: ``call`` on the pooled DB-API connection, in the transaction SQLAlchemy
        would open (``configure_sqlite``: ``BEGIN IMMEDIATE`` for a write), committed or
        rolled back here; the pool still checks the connection out and in (and rolls back
        on its way back). No SQLAlchemy execution per statement: that was most of an
        append's time. The driver's errors become SQLAlchemy's and are mapped by ``_errors``
        as on every other path (on the error path only: its context managers cost as much as
        a statement)."""
        assert self.dialect == "sqlite"
        if self._gate.active:
            with self._gate.hold():
                return self._on_driver(engine, call)
        return self._on_driver(engine, call)

    def _on_driver(self, engine: Engine, call: Call[T]) -> T:
        dialect = engine.dialect
        failed = dialect.loaded_dbapi.Error
        try:
            pooled = engine.raw_connection()
        except SQLAlchemyError:  # no pooled connection in time
            with _errors.unavailable():
                raise
        except failed as exc:
            with _errors.unavailable():
                raise _errors.from_driver(dialect, exc) from exc
        try:
            return _in_transaction(pooled, call)
        except failed as exc:
            with _errors.mapped():
                raise _errors.from_driver(dialect, exc, pooled) from exc
        finally:
            pooled.close()

    async def _arun(self, call: Call[T]) -> T:
        try:
            return await self._arun_once(call)
        except StaleKey:
            await asyncio.to_thread(self._refresh_key)
            return await self._arun_once(call)

    async def _arun_once(self, call: Call[T]) -> T:
        engine = self._engines_for(call)[1]
        await self.asetup()
        async with self._gate.ahold():
            with _errors.unavailable():
                conn = await engine.connect().start()
            try:
                with _errors.mapped():
                    await conn.execution_options(muxi_write=call.write)
                    await conn.run_sync(claim)
                    async with conn.begin():
                        return await conn.run_sync(self._call, call)
            finally:
                await conn.close()

    def _refresh_key(self) -> None:
        """Read the newest scope key (after a rotation dropped the one we held)."""
        with self._as_owner() as conn:
            self._scope_key = read_scope_key(conn, self.tables)
        log.info("read the rotated row-level-security scope key")

    @contextmanager
    def _as_owner(self) -> Iterator[Connection]:
        """One write transaction as the tables' owner (``admin_url``, else the app's role)."""
        owner = self._admin[0] if self._admin else self._writers[0]
        with self._gate.hold(), _errors.mapped():
            with _errors.unavailable():
                conn = owner.connect()
            with conn:
                conn.execution_options(muxi_write=True)
                with conn.begin():
                    yield conn

    def _owner(self) -> Engine:
        """The tables' owner (``admin_url``, else the app's role): it may build indexes."""
        return self._admin[0] if self._admin else self._writers[0]

    def _admin_engines(self) -> tuple[Engine, AsyncEngine]:
        if self._admin is None:
            if self.dialect == "postgresql":
                raise ConfigError("tenant-wide operations on PostgreSQL need admin_url")
            return self._writers
        return self._admin

    def _fold_log(self) -> None:
        """SQLite: after deleting content, copy the write-ahead log into the database and
        empty it, so no old log frame keeps the text (freed pages are zeroed by ``_ops``).
        Best effort: a reader still holding old frames leaves them to a later checkpoint."""
        if self.dialect != "sqlite" or self._target.memory:
            return
        # On the writer's own connection: an idle pooled writer keeps the log busy for any
        # other connection's TRUNCATE checkpoint (it waited out the whole busy timeout).
        with self._gate.hold(), _errors.mapped(), self._writers[0].connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            log.warning("the SQLite log could not be emptied now (a reader is active)")

    def _all_engines(self) -> list[tuple[Engine, AsyncEngine]]:
        engines = [(self._engine, self._aengine)]
        if self._writers != engines[0]:
            engines.append(self._writers)
        return engines + ([self._admin] if self._admin else [])


def _in_transaction(pooled: PoolProxiedConnection, call: Call[T]) -> T:
    db = pooled.driver_connection
    assert db is not None
    db.execute("BEGIN IMMEDIATE" if call.write else "BEGIN")
    try:
        answer = call.fn(db, *call.args)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return answer


@contextmanager
def _from_driver(dialect: Dialect) -> Iterator[None]:
    """The async half's driver statements: their errors as SQLAlchemy's (``_driver_error``)."""
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        raise _errors.from_driver(dialect, exc) from exc
