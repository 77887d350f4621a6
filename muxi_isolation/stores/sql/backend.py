"""``SQLBackend``: the storage protocol on SQLAlchemy 2 Core, for SQLite and PostgreSQL.

One class serves both databases; the differences live in small modules beside it (URLs,
types, filter compiler, vector planner, row-level security). Each public call of the
protocol becomes one transaction that opens for one scope: on PostgreSQL its first
statement sets the row-level-security scope, transaction-locally. Sync methods run on a
sync engine; the ``a``-prefixed twins on an async engine (aiosqlite, psycopg async), with
the same operation code driven through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, TextClause, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from ... import policy
from ...audit import AuditEvent, AuditQuery, instrument
from ...errors import AdapterUnavailable, ConfigError, StorageError
from ...quotas import Limits
from ...records import Memory
from ...scope import Scope
from .._graph_operations import GraphOperation
from ..base import Backend, Counts
from ..operations import Operation
from . import _audit, _bulk, _dimension, _errors, _rls
from ._ann_index import AnnIndexes, Deferred, shared_index
from ._graph_ops import SQLGraph
from ._ops import Ops
from ._schema import Tables, build_tables, install, replace_schema, with_dimension
from ._types import PRECISIONS, Precision, register_vector_wire
from ._urls import Target, resolve_url
from ._vectors import (
    DEFAULT_ANN_MIN_FRACTION,
    DEFAULT_ANN_THRESHOLD,
    DEFAULT_EF_SEARCH,
    DEFAULT_MAX_SCAN_TUPLES,
    VectorPlanner,
)

__all__ = ["SQLBackend"]

log = logging.getLogger("muxi_isolation.stores.sql")
T = TypeVar("T")
PURGE_BATCH = 500  # expired sessions per purge transaction
_EVERY_TENANT = ":every"  # never a tenant id (a tenant id cannot hold ":")


class SQLBackend(SQLGraph, Backend):
    """Sessions, messages and memories in SQLite (embedded) or PostgreSQL + pgvector.

    ``url``: ``sqlite:///path.db``, ``sqlite://`` (a private in-memory database), or
    ``postgresql://...`` (any PostgreSQL URL; psycopg 3 drives it, sync and async).

    On PostgreSQL, row-level security is a second wall behind the queries' own filters.
    It only holds when the app's role is not a superuser, has no ``BYPASSRLS`` and does not
    own the tables: pass that role's ``url`` and an ``admin_url`` for the owner, which then
    creates and upgrades the tables, grants the app role its rights, and serves the
    tenant-wide admin path (``forget_tenant``, ``list_tenants``, ``purge_expired``). Without
    ``admin_url`` the ``url``'s role owns the tables (``FORCE ROW LEVEL SECURITY`` still
    applies to it, a superuser skips it); ``rls_enforced()`` tells which.
    ``create_app_role`` makes such a role.

    ``embedding_dimension``: ``"auto"`` (the default) takes it from the first vector written
    and records it (``_dimension``); ``n`` is ``VECTOR(n)`` from the start; either way an
    HNSW index serves large users when n <= 2000. ``None`` stores vectors of any length and
    always searches exactly. ``set_embedding_dimension`` changes a recorded dimension.
    ``embedding_precision``: ``"full"`` (float32, ``VECTOR``) or, on PostgreSQL only,
    ``"half"`` (float16, ``HALFVEC``: half the table and index, HNSW up to n = 4000;
    vectors read back rounded). Fixed when the tables are created: a store created with the
    other precision is refused.
    ``table_prefix`` and ``schema`` (PostgreSQL) place the tables. ``citus=True`` sets the
    scope with ``SET LOCAL`` so it reaches Citus workers (see docs/citus.md).
    ``ann_threshold``, ``ann_min_fraction``, ``ef_search`` and ``max_scan_tuples`` tune
    per-user vector search (see ``_vectors``); a user past ``ann_threshold`` gets an HNSW
    index of their own, built at the end of the write that crossed it, or with
    ``ann_index_delay=s`` in the background once their writes paused for ``s`` seconds (a
    bulk load then puts no row into a live index; see ``_ann_index``).
    ``statement_timeout`` (seconds) bounds every call: PostgreSQL cancels a statement, lock
    wait or idle transaction past it.
    ``text_search_config``: PostgreSQL's text search configuration for keyword and hybrid
    search (``english`` by default; ``simple`` for no stemming).
    """

    def __init__(
        self,
        url: str | URL,
        *,
        embedding_dimension: int | str | None = _dimension.AUTO,
        admin_url: str | URL | None = None,
        table_prefix: str = "muxi_",
        schema: str | None = None,
        citus: bool = False,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ann_min_fraction: float = DEFAULT_ANN_MIN_FRACTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        max_scan_tuples: int = DEFAULT_MAX_SCAN_TUPLES,
        pool_size: int = 5,
        max_overflow: int = 10,
        busy_timeout: float = 30.0,
        statement_timeout: float | None = None,
        text_search_config: str = "english",
        embedding_precision: Precision = "full",
        ann_index_delay: float = 0.0,
    ) -> None:
        self._target = resolve_url(url)
        admin = resolve_url(admin_url) if admin_url is not None else None
        self.dialect = self._target.dialect
        if admin is not None and admin.dialect != self.dialect:
            raise ConfigError("admin_url must name the same kind of database as url")
        if schema is not None and self.dialect != "postgresql":
            raise ConfigError("schema= is for PostgreSQL")
        if isinstance(embedding_dimension, str) and embedding_dimension != _dimension.AUTO:
            raise ConfigError('embedding_dimension must be a positive integer, "auto" or None')
        if embedding_precision not in PRECISIONS:
            raise ConfigError('embedding_precision must be "full" or "half"')
        if embedding_precision == "half" and self.dialect != "postgresql":
            raise ConfigError(
                'embedding_precision "half" is for PostgreSQL (pgvector\'s halfvec); '
                f"{self.dialect} stores float32 vectors: remove it or use PostgreSQL"
            )
        self._dimension = embedding_dimension  # as configured
        fixed = None if isinstance(embedding_dimension, str) else embedding_dimension
        self.tables: Tables = build_tables(
            table_prefix, schema, fixed, text_search_config, embedding_precision
        )
        self.citus = citus
        self.vectors = VectorPlanner(
            self.tables,
            self.dialect,
            ann_threshold=ann_threshold,
            ann_min_fraction=ann_min_fraction,
            ef_search=ef_search,
            max_scan_tuples=max_scan_tuples,
            set_local=citus,
        )
        self._ops = Ops(self.tables, self.dialect, self.vectors)
        self._ann = AnnIndexes(self._ops, self.vectors)
        self.vectors.own_index = self._ann.ready
        if not ann_index_delay >= 0:
            raise ConfigError("ann_index_delay must be a number of seconds >= 0")
        self._deferred = Deferred(ann_index_delay, self._build_index) if ann_index_delay else None
        self._gate = _Gate(self._target.memory)
        pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
        if statement_timeout is not None:
            if not statement_timeout > 0:
                raise ConfigError("statement_timeout must be a positive number of seconds")
            busy_timeout = min(busy_timeout, statement_timeout)
            pool["pool_timeout"] = statement_timeout
        self._engine, self._aengine = _engines(self._target, pool, busy_timeout, statement_timeout)
        self._writers = self._engine, self._aengine
        if self.dialect == "sqlite" and not self._target.memory:
            # One writer connection: SQLite lets one writer in at a time anyway, and writers
            # queued here hold no connection that a reader needs (WAL serves readers while a
            # writer holds the file's lock).
            single = {"pool_size": 1, "max_overflow": 0, "pool_timeout": busy_timeout}
            self._writers = _engines(self._target, single, busy_timeout, statement_timeout)
        self._admin: tuple[Engine, AsyncEngine] | None = None
        if admin is not None:
            self._admin = _engines(admin, {"poolclass": NullPool}, busy_timeout)
        self._enter_statement: TextClause | None = None
        self._ready = False
        self._install_lock = threading.Lock()
        self._rls: bool = False
        self._scope_key: bytes | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLBackend({self._target.sync_url.render_as_string(hide_password=True)!r})"

    @property
    def limits(self) -> Limits:
        """Read by the operations inside each write transaction (``Ops.limits``)."""
        return self._ops.limits

    @limits.setter
    def limits(self, value: Limits) -> None:
        self._ops.limits = value

    # -- transactions ---------------------------------------------------------------------

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
                    raise _StaleKey from exc
                raise
            return
        if admin_tenant == _EVERY_TENANT:
            settings = {_rls.ADMIN: _rls.LIST_TENANTS}
        else:
            settings = {_rls.TENANT: admin_tenant, _rls.ADMIN: "on"}
        _rls.apply_settings(conn, settings, set_local=self.citus)

    def _call(
        self,
        conn: Connection,
        scope: Scope | None,
        admin_tenant: str | None,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        self._enter(conn, scope, admin_tenant)
        return fn(conn, *args, **kwargs)

    def _run(
        self,
        scope: Scope | None,
        fn: Callable[..., T],
        *args: Any,
        write: bool = False,
        admin_tenant: str | None = None,
        **kwargs: Any,
    ) -> T:
        try:
            return self._run_once(scope, fn, args, kwargs, write, admin_tenant)
        except _StaleKey:  # the key was rotated and the old one dropped: read the new one
            self._refresh_key()
            return self._run_once(scope, fn, args, kwargs, write, admin_tenant)

    def _run_once(
        self,
        scope: Scope | None,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        write: bool,
        admin_tenant: str | None,
    ) -> T:
        engines = self._writers if write else (self._engine, self._aengine)
        engine = engines[0] if admin_tenant is None else self._admin_engines()[0]
        self.setup()
        with self._gate.hold(), _errors.mapped():
            with _errors.unavailable():
                conn = engine.connect()
            with conn:
                conn.execution_options(muxi_write=write)
                _claim(conn)
                with conn.begin():
                    return self._call(conn, scope, admin_tenant, fn, args, kwargs)

    async def _arun(
        self,
        scope: Scope | None,
        fn: Callable[..., T],
        *args: Any,
        write: bool = False,
        admin_tenant: str | None = None,
        **kwargs: Any,
    ) -> T:
        try:
            return await self._arun_once(scope, fn, args, kwargs, write, admin_tenant)
        except _StaleKey:
            await asyncio.to_thread(self._refresh_key)
            return await self._arun_once(scope, fn, args, kwargs, write, admin_tenant)

    async def _arun_once(
        self,
        scope: Scope | None,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        write: bool,
        admin_tenant: str | None,
    ) -> T:
        engines = self._writers if write else (self._engine, self._aengine)
        engine = engines[1] if admin_tenant is None else self._admin_engines()[1]
        await self.asetup()
        async with self._gate.ahold():
            with _errors.unavailable():
                conn = await engine.connect().start()
            try:
                with _errors.mapped():
                    await conn.execution_options(muxi_write=write)
                    await conn.run_sync(_claim)
                    async with conn.begin():
                        return await conn.run_sync(
                            self._call, scope, admin_tenant, fn, args, kwargs
                        )
            finally:
                await conn.close()

    def _refresh_key(self) -> None:
        """Read the newest scope key (after a rotation dropped the one we held)."""
        with self._as_owner() as conn:
            self._scope_key = _read_scope_key(conn, self.tables)
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

    # -- schema ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create or upgrade the tables now (otherwise done on first use)."""
        if self._ready:
            return
        with self._install_lock:
            if self._ready:
                return
            with self._gate.hold(), _errors.mapped():
                with _errors.unavailable():
                    conn = self._engine.connect()
                with conn:
                    probe = _probe(conn)
            with self._as_owner() as conn:
                self._place(conn)
                install(conn, self.tables, app_role=probe.role if self._admin else None)
                self._sized(conn)
                key = _read_scope_key(conn, self.tables)
            self._installed(probe, key)

    async def asetup(self) -> None:
        if self._ready:
            return
        async with self._gate.ahold():
            with _errors.mapped():
                with _errors.unavailable():
                    conn = await self._aengine.connect().start()
                try:
                    probe = await conn.run_sync(_probe)
                finally:
                    await conn.close()
                owner = self._admin[1] if self._admin else self._writers[1]
                with _errors.unavailable():
                    conn = await owner.connect().start()
                try:
                    await conn.execution_options(muxi_write=True)
                    async with conn.begin():
                        await conn.run_sync(self._place)
                        app_role = probe.role if self._admin else None
                        await conn.run_sync(install, self.tables, app_role=app_role)
                        await conn.run_sync(self._sized)
                        key = await conn.run_sync(_read_scope_key, self.tables)
                finally:
                    await conn.close()
        self._installed(probe, key)

    def _place(self, conn: Connection) -> None:
        """Name the schema of every table: PostgreSQL and SQLite look unqualified names up
        in the connection's temporary schema first, where a table of the same name could be
        planted. Without ``schema=`` the tables live where the owner's connection makes them
        (PostgreSQL's ``current_schema()``, SQLite's ``main``), and every statement names
        that schema from now on."""
        if self.tables.metadata.schema is None:
            postgres = self.dialect == "postgresql"
            schema = str(conn.scalar(text("SELECT current_schema()"))) if postgres else "main"
            self._use(replace_schema(self.tables, schema))
        if self.dialect == "postgresql":
            self._enter_statement = _rls.enter_statement(conn, self.tables)

    def _use(self, tables: Tables) -> None:
        """Swap in ``tables`` (placed, or with a dimension) everywhere they are read."""
        self.tables = tables
        self._ops.t = tables
        self.vectors.tables = tables
        self.__dict__.pop("_graph_ops", None)  # rebuilt from these tables

    def _sized(self, conn: Connection) -> None:
        """After install, as the owner: agree with the recorded embedding precision and
        dimension."""
        held = _dimension.read_precision(conn, self.tables)
        if held is not None and held != self.tables.precision:
            raise ConfigError(
                f"the store holds {held}-precision embeddings "
                f"({'HALFVEC' if held == 'half' else 'VECTOR'}); the configuration says "
                f"{self.tables.precision}: configure embedding_precision: {held}"
            )
        stored = _dimension.read_dimension(conn, self.tables)
        wanted = self._dimension
        if isinstance(wanted, int):
            if stored is None:
                stored = _dimension.fix_dimension(conn, self.tables, wanted)
            if stored != wanted:
                raise ConfigError(
                    f"the store holds {stored}-dimension embeddings; the configuration says "
                    f"{wanted}: {_dimension.change_hint(wanted)}, or configure "
                    f"embedding_dimension: auto (or {stored})"
                )
        if wanted == _dimension.AUTO and stored is not None:
            self._use(with_dimension(self.tables, stored))
        if self.dialect == "postgresql":  # a store made before per-user indexes keeps its own
            self.vectors.shared = shared_index(conn, self.tables)

    def _fix_dimension(self, memories: list[Memory]) -> None:
        """``"auto"``: the first vector written fixes the dimension (as the owner)."""
        sent = next((len(m.embedding) for m in memories if m.embedding is not None), None)
        if sent is None or self._dimension != _dimension.AUTO or self.tables.dimension:
            return
        with self._as_owner() as conn:
            stored = _dimension.fix_dimension(conn, self.tables, sent)
        self._use(with_dimension(self.tables, stored))

    def set_embedding_dimension(self, dimension: int, *, clear: bool = False) -> int:
        """Change the memories' embedding dimension (as the owner); stored vectors must be
        dropped (``clear=True``) and embedded again. Returns how many were dropped."""
        self.setup()
        with self._as_owner() as conn:
            dropped = _dimension.set_dimension(conn, self.tables, dimension, clear=clear)
        self._dimension = dimension if isinstance(self._dimension, int) else self._dimension
        self._use(with_dimension(self.tables, dimension))
        return dropped

    def embedding_dimension(self) -> int | None:
        """The recorded dimension (``None``: not fixed yet, or any length)."""
        self.setup()
        return self.tables.dimension

    def _installed(self, probe: _Probe, key: bytes | None) -> None:
        self._scope_key = key
        self._rls = self.dialect == "postgresql" and not probe.bypass
        if self.dialect == "postgresql":
            if probe.bypass:
                log.warning("the app's database role bypasses row-level security (superuser?)")
            for warning in probe.warnings(owner=self._admin is not None):
                log.warning(warning)
        self._ready = True

    def rotate_scope_key(self, *, finish: bool = False) -> int:
        """Rotate the key that signs the row-level-security scope, without downtime.

        ``finish=False`` adds a new key: every backend signs with it from its next start,
        and the older keys stay valid meanwhile. ``finish=True`` drops every older key; a
        backend still holding one is refused once, reads the new key and retries, so its
        callers see nothing. Returns the new key's number, or how many keys were dropped.
        Needs the owner (``admin_url``).
        """
        if self.dialect != "postgresql":
            raise ConfigError("the scope key signs PostgreSQL's row-level security only")
        self.setup()
        with self._as_owner() as conn:
            change = _rls.drop_old_scope_keys if finish else _rls.add_scope_key
            result = change(conn, self.tables)
        self._refresh_key()
        return result

    def rls_enforced(self) -> bool:
        """Whether PostgreSQL row-level security applies to the app's role."""
        self.setup()
        return self._rls

    def search_plan(self, scope: Scope) -> str:
        """Which path ("exact" or "hnsw") a search for this user would take now."""
        user = policy.require_scope(scope).user()
        return self._run(user, self.vectors.plan, user)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._deferred is not None:
            self._deferred.close()
        engines = self._all_engines()
        for sync_engine, async_engine in engines:
            sync_engine.dispose()
            _dispose_elsewhere(async_engine)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._deferred is not None:
            await asyncio.to_thread(self._deferred.close)
        engines = self._all_engines()
        for sync_engine, async_engine in engines:
            await async_engine.dispose()
            sync_engine.dispose()

    def _all_engines(self) -> list[tuple[Engine, AsyncEngine]]:
        engines = [(self._engine, self._aengine)]
        if self._writers != engines[0]:
            engines.append(self._writers)
        return engines + ([self._admin] if self._admin else [])

    # -- admin path (tenant-wide): as the owner (``admin_url``) on PostgreSQL ---------------

    def _forget_tenant(self, tenant_id: str) -> Counts:
        users = self._tenant_users(tenant_id)
        counts = self._run(
            None, self._ops.forget_tenant, tenant_id, write=True, admin_tenant=tenant_id
        )
        self._ann.drop(self._owner(), tenant_id, users)
        self._fold_log()
        return counts

    async def _aforget_tenant(self, tenant_id: str) -> Counts:
        users = await asyncio.to_thread(self._tenant_users, tenant_id)
        counts = await self._arun(
            None, self._ops.forget_tenant, tenant_id, write=True, admin_tenant=tenant_id
        )
        await asyncio.to_thread(self._ann.drop, self._owner(), tenant_id, users)
        await asyncio.to_thread(self._fold_log)
        return counts

    def _tenant_users(self, tenant_id: str) -> list[str]:
        """Whose HNSW index a tenant's forgetting drops (read before the rows go)."""
        if not self._ann.applies():
            return []
        return self._run(None, self._ann.tenant_users, tenant_id, admin_tenant=tenant_id)

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

    def _purge_expired(self, tenant_id: str, before: datetime) -> Counts:
        total: Counts = {}
        while True:  # one short transaction per batch of sessions
            counts, n = self._run(
                None,
                self._ops.purge_expired,
                tenant_id,
                before,
                PURGE_BATCH,
                write=True,
                admin_tenant=tenant_id,
            )
            _add(total, counts)
            if n < PURGE_BATCH:
                self._fold_log()
                return total

    async def _apurge_expired(self, tenant_id: str, before: datetime) -> Counts:
        total: Counts = {}
        while True:
            counts, n = await self._arun(
                None,
                self._ops.purge_expired,
                tenant_id,
                before,
                PURGE_BATCH,
                write=True,
                admin_tenant=tenant_id,
            )
            _add(total, counts)
            if n < PURGE_BATCH:
                await asyncio.to_thread(self._fold_log)
                return total

    # -- the audit trail (``_audit``): each event in a short transaction of its own -------

    def _append_audit(self, event: AuditEvent) -> None:
        self.setup()
        with self._gate.hold(), _errors.mapped():
            with _errors.unavailable():
                conn = self._writers[0].connect()
            with conn:
                conn.execution_options(muxi_write=True)
                with conn.begin():
                    _audit.append(conn, self.tables, event)

    async def _aappend_audit(self, event: AuditEvent) -> None:
        await self.asetup()
        async with self._gate.ahold():
            with _errors.unavailable():
                conn = await self._writers[1].connect().start()
            try:
                with _errors.mapped():
                    await conn.execution_options(muxi_write=True)
                    async with conn.begin():
                        await conn.run_sync(_audit.append, self.tables, event)
            finally:
                await conn.close()

    def _read_audit(self, query: AuditQuery) -> list[AuditEvent]:
        self.setup()
        with self._as_owner() as conn:
            return _audit.read(conn, self.tables, query)

    async def _aread_audit(self, query: AuditQuery) -> list[AuditEvent]:
        return await asyncio.to_thread(self._read_audit, query)

    def _prune_audit(self, before: datetime) -> int:
        self.setup()
        with self._as_owner() as conn:
            return _audit.prune(conn, self.tables, before)

    # -- how an operation reaches storage: each primitive one transaction ----------------

    def _perform(self, op: Operation[Any]) -> Any:
        if op.name in _OWN_STEPS:
            return getattr(self, f"_{op.name}")(*op.args())
        fn = getattr(self._graph_ops if isinstance(op, GraphOperation) else self._ops, op.name)
        return self._run(op.scope, fn, *op.args(), write=op.write, admin_tenant=_admin(op))

    async def _aperform(self, op: Operation[Any]) -> Any:
        if op.name in _OWN_STEPS:
            return await getattr(self, f"_a{op.name}")(*op.args())
        fn = getattr(self._graph_ops if isinstance(op, GraphOperation) else self._ops, op.name)
        return await self._arun(op.scope, fn, *op.args(), write=op.write, admin_tenant=_admin(op))

    def _upsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        self.setup()
        self._fix_dimension(memories)
        ids, large = self._run(scope, self._ann.upsert, scope, memories, write=True)
        if large:  # past ann_threshold: the user's own HNSW index, after the commit
            self._index(scope.user())
        return ids

    async def _aupsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        await self.asetup()
        if self._dimension == _dimension.AUTO and not self.tables.dimension:
            await asyncio.to_thread(self._fix_dimension, memories)  # once per store
        ids, large = await self._arun(scope, self._ann.upsert, scope, memories, write=True)
        if large:
            await asyncio.to_thread(self._index, scope.user())
        return ids

    def _index(self, user: Scope) -> None:
        if self._deferred is None:
            self._build_index(user)
        else:
            self._deferred.want(user)

    def _build_index(self, user: Scope) -> None:
        self._ann.build(self._owner(), user)

    def _forget_user(self, user: Scope) -> Counts:
        counts = self._run(user, self._ops.forget_user, user, write=True)
        self._ann.drop(self._owner(), user.tenant_id, [user.user_id])  # it holds their vectors
        self._fold_log()
        return counts

    async def _aforget_user(self, user: Scope) -> Counts:
        counts = await self._arun(user, self._ops.forget_user, user, write=True)
        await asyncio.to_thread(self._ann.drop, self._owner(), user.tenant_id, [user.user_id])
        await asyncio.to_thread(self._fold_log)
        return counts


# Operations that take more than their one transaction (an index, the SQLite log, batches).
_OWN_STEPS = frozenset({"upsert_memories", "forget_user", "forget_tenant", "purge_expired"})


def _admin(op: Operation[Any]) -> str | None:
    """The tenant a tenant-wide operation acts on, on the admin path (``None``: a user's)."""
    if op.level != "tenant":
        return None
    return getattr(op, "tenant_id", None) or _EVERY_TENANT


def _add(total: Counts, more: Counts) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n


def _read_scope_key(conn: Connection, tables: Tables) -> bytes | None:
    """The key that signs the RLS scope (PostgreSQL), read as the tables' owner."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        return _rls.read_scope_key(conn, tables)
    except ProgrammingError as exc:  # the app's role, which may not read it
        raise ConfigError(
            "the app's role cannot read the row-level-security scope key: pass admin_url "
            "(the tables' owner) to SQLBackend"
        ) from exc


class _StaleKey(StorageError):
    """``scope_enter`` refused our tag: the key we hold was rotated away."""

    def __init__(self) -> None:
        super().__init__("the row-level-security scope tag verifies under no current key")


@dataclass(frozen=True)
class _Probe:
    """What the app's role may do beyond its grants (PostgreSQL)."""

    role: str | None = None
    bypass: bool = False
    temp: bool = False
    owns: int = 0
    database: str = ""

    def warnings(self, *, owner: bool) -> list[str]:
        """Startup warnings, each naming its fix."""
        out: list[str] = []
        if self.temp and not self.bypass:
            out.append(
                f"the app's role {self.role!r} can create temporary tables, which could "
                "shadow tables on a pooled connection: run REVOKE TEMPORARY ON DATABASE "
                f'"{self.database}" FROM PUBLIC, "{self.role}" as the owner '
                "(create_app_role does this)"
            )
        if self.owns and owner:
            out.append(
                f"the app's role {self.role!r} owns {self.owns} object(s) in the database: "
                "an owner can change its own tables' policies; reassign them to the owner "
                f'(REASSIGN OWNED BY "{self.role}" TO <owner>)'
            )
        return out


_PROBE = text(
    "SELECT current_user, r.rolsuper OR r.rolbypassrls, "
    "has_database_privilege(current_database(), 'TEMPORARY'), "
    "(SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid AND c.relnamespace NOT IN "
    " (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg\\_%' OR nspname = "
    " 'information_schema')) "
    "+ (SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid), current_database() "
    "FROM pg_roles r WHERE r.rolname = current_user"
)


def _probe(conn: Connection) -> _Probe:
    """The connected role: whether it skips row-level security, may create temporary
    tables, or owns anything (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return _Probe()
    row = conn.execute(_PROBE).one()
    return _Probe(str(row[0]), bool(row[1]), bool(row[2]), int(row[3]), str(row[4]))


# -- engines ----------------------------------------------------------------------------------


def _engines(
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
            _configure_sqlite(engine, memory=target.memory, busy_ms=int(busy_timeout * 1000))
    else:
        for engine in (sync_engine, async_engine.sync_engine):
            event.listen(engine, "connect", register_vector_wire)
            event.listen(engine, "connect", _bulk.register)
            event.listen(engine, "checkout", _mark_checkout)
            event.listen(engine, "before_cursor_execute", _mark_foreign)
            event.listen(engine, "reset", _discard_session_state)
    return sync_engine, async_engine


_OWN = "muxi_own"  # execution option: the statement is one of the backend's operations
_DIRTY = "muxi_dirty"  # pooled connection info: it ran a statement that was not


def _mark_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Every checkout is someone else's until the backend claims it (``_claim``): a
    connection taken with ``raw_connection()`` runs SQL no event sees, so it is reset."""
    record.info[_DIRTY] = True


def _claim(conn: Connection) -> None:
    """The connection runs one of the backend's operations: nothing to reset for it, unless
    a statement that is not the backend's is seen (``_mark_foreign``)."""
    conn.execution_options(**{_OWN: True})
    conn.info.pop(_DIRTY, None)


def _mark_foreign(conn: Connection, *_args: Any) -> None:
    """Note on the pooled connection any statement the backend's operations did not send.
    Theirs leave nothing on the session (every setting they make, every lock they take is
    transaction-local, and no table is created), so only such a connection needs a reset."""
    if not conn.get_execution_options().get(_OWN):
        conn.info[_DIRTY] = True


def _discard_session_state(dbapi_connection: Any, record: Any, state: Any) -> None:
    """On its way back to the pool, a PostgreSQL connection that ran any statement of
    someone else's (``_mark_foreign``) forgets everything it may have left on the session:
    temporary tables, session-level settings, prepared statements, cursors, advisory locks,
    LISTENs (``DISCARD ALL``, outside a transaction). The backend's own calls skip that round
    trip."""
    if state.terminate_only or not state.asyncio_safe:
        return  # being closed, or garbage-collected off its event loop: nothing to reuse
    dbapi_connection.rollback()
    if not record.info.pop(_DIRTY, False):
        return
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("DISCARD ALL")
    finally:
        dbapi_connection.autocommit = False


def _configure_sqlite(engine: Engine, *, memory: bool, busy_ms: int) -> None:
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


def _dispose_elsewhere(engine: AsyncEngine) -> None:
    """Close an async engine's pooled connections from sync code, on a loop of its own."""
    worker = threading.Thread(target=asyncio.run, args=(engine.dispose(),), daemon=True)
    worker.start()
    worker.join()


class _Gate:
    """Serializes transactions on a shared in-memory SQLite database (one connection)."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        with self._lock:
            yield

    @asynccontextmanager
    async def ahold(self) -> AsyncIterator[None]:
        if not self.active:
            yield
            return
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.001)
        try:
            yield
        finally:
            self._lock.release()


instrument(SQLBackend, ["rotate_scope_key"])  # an admin act: audited like the others
