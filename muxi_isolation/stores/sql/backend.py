"""``SQLBackend``: the storage protocol on SQLAlchemy 2 Core, for SQLite and PostgreSQL.

One class serves both databases; the differences live in small modules beside it (URLs,
types, filter compiler, vector planner, row-level security). Each public call of the
protocol becomes one transaction that opens for one scope: on PostgreSQL its first
statement sets the row-level-security scope, transaction-locally. Sync methods run on a
sync engine; the ``a``-prefixed twins on an async engine (aiosqlite, psycopg async), with
the same operation code driven through ``AsyncConnection.run_sync`` (``_transactions``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.engine import URL

from ... import policy
from ...audit import AuditEvent, AuditQuery
from ...errors import ConfigError, StorageError
from ...plans import Plan, Step, in_thread, step, twins
from ...quotas import Limits
from ...records import Memory
from ...scope import Scope
from .._graph_operations import GraphOperation
from .._memory_ops import VectorSearch
from .._message_ops import GetMessages
from ..base import Backend, Counts
from ..operations import Operation
from . import _audit, _dimension, _errors, _pipeline
from ._admin import AdminPath, admin_tenant
from ._ann_index import DEFAULT_ANN_INDEX_DELAY, AnnIndexes, Deferred
from ._engines import dispose_elsewhere
from ._graph_ops import SQLGraph
from ._ops import Ops
from ._schema import Tables, build_tables
from ._transactions import Call
from ._types import PRECISIONS, Precision
from ._urls import Target, resolve_url
from ._vectors import (
    DEFAULT_ANN_MIN_FRACTION,
    DEFAULT_ANN_THRESHOLD,
    DEFAULT_MAX_SCAN_TUPLES,
    VectorPlanner,
)

__all__ = ["SQLBackend"]

log = logging.getLogger("muxi_isolation.stores.sql")


class SQLBackend(SQLGraph, AdminPath, Backend):
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
    per-user vector search (see ``_vectors``; ``ef_search=None``: chosen per user by
    the size of their HNSW index; a number fixes it for everyone); a user past
    ``ann_threshold`` gets an HNSW index of their own, built in the background once
    their writes paused for ``ann_index_delay`` seconds (a bulk load then puts no row
    into a live index; ``close`` and ``build_indexes`` run the builds still waiting; see
    ``_ann_index``), or with ``ann_index_delay=0`` at the end of the write that crossed it.
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
        ef_search: int | None = None,
        max_scan_tuples: int = DEFAULT_MAX_SCAN_TUPLES,
        pool_size: int = 5,
        max_overflow: int = 10,
        busy_timeout: float = 30.0,
        statement_timeout: float | None = None,
        text_search_config: str = "english",
        embedding_precision: Precision = "full",
        ann_index_delay: float = DEFAULT_ANN_INDEX_DELAY,
    ) -> None:
        self._target = resolve_url(url)
        admin = resolve_url(admin_url) if admin_url is not None else None
        self.dialect = self._target.dialect
        _check(self.dialect, admin, schema, embedding_dimension, embedding_precision)
        self._dimension = embedding_dimension  # as configured
        fixed = None if isinstance(embedding_dimension, str) else embedding_dimension
        self.tables: Tables = build_tables(
            table_prefix, schema, fixed, text_search_config, embedding_precision
        )
        self.citus = citus
        # One-round-trip reads (``_pipeline``): not under Citus, nor with a libpq before 14.
        self._pipelines = self.dialect == "postgresql" and not citus and _pipeline.supported()
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
        self._ops.one_trip_append = not citus  # Citus: no data-modifying CTE in INSERT ... SELECT
        self._ann = AnnIndexes(self._ops, self.vectors)
        self.vectors.own_index = self._ann.ready
        if not ann_index_delay >= 0:
            raise ConfigError("ann_index_delay must be a number of seconds >= 0")
        if ann_index_delay:  # the builds wait; a large user's search finding no index asks
            self._ann.deferred = Deferred(ann_index_delay, self._build_later)
            self.vectors.wants_index = partial(self._ann.deferred.want, push=False)
        pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
        self._open_engines(admin, pool, busy_timeout, statement_timeout)
        self._not_installed()
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

    def search_plan(self, scope: Scope) -> str:
        """Which path ("exact" or "hnsw") a search for this user would take now."""
        user = policy.require_scope(scope).user()
        return self._run(Call(user, self.vectors.plan, (user,)))

    def build_indexes(self, timeout: float | None = None) -> bool:
        """Build now the per-user HNSW indexes waiting for their users' writes to pause, and
        wait for them (the end of a bulk load); ``False`` if ``timeout`` seconds passed first."""
        return self._ann.settle(timeout)

    async def abuild_indexes(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.build_indexes, timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ann.close()  # the builds still waiting run first
        engines = self._all_engines()
        for sync_engine, async_engine in engines:
            sync_engine.dispose()
            dispose_elsewhere(async_engine)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._ann.close)
        engines = self._all_engines()
        for sync_engine, async_engine in engines:
            await async_engine.dispose()
            sync_engine.dispose()

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
        return self._run(self._call_of(op))

    async def _aperform(self, op: Operation[Any]) -> Any:
        if op.name in _OWN_STEPS:
            return await getattr(self, f"_a{op.name}")(*op.args())
        return await self._arun(self._call_of(op))

    def _call_of(self, op: Operation[Any]) -> Call[Any]:
        """The primitive ``op`` names, as one transaction of the SQL operations."""
        if op.name == "append_to_session" and self.dialect == "sqlite":  # the hot write
            return Call(op.scope, self._ops.append_on_driver, (op,), write=True, driver=True)
        if op.name == "append_to_session" and self._pipelines:  # one trip, when plain
            return Call(op.scope, self._ops.append_pipelined, (op,), write=True, driver=True)
        hot_search = self._pipelines or self.dialect == "sqlite"
        if isinstance(op, VectorSearch) and op.node is None and hot_search:  # hot read
            return Call(op.scope, self._ops.search_on_driver, op.args(), driver=True)
        if isinstance(op, GetMessages) and self._pipelines and op.limit is None and not op.offset:
            return Call(op.scope, self._ops.messages_on_driver, (op,), driver=True)  # one trip
        fn = getattr(self._graph_ops if isinstance(op, GraphOperation) else self._ops, op.name)
        args = (op,) if op.name in _WHOLE else op.args()
        return Call(op.scope, fn, args, op.write, admin_tenant(op))

    def _upsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        self.setup()
        self._fix_dimension(memories)
        ids, large = self._run(Call(scope, self._ann.upsert, (scope, memories), write=True))
        if large:  # past ann_threshold: the user's own HNSW index, after the commit
            self._index(scope.user())
        return ids

    async def _aupsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        await self.asetup()
        if self._dimension == _dimension.AUTO and not self.tables.dimension:
            await asyncio.to_thread(self._fix_dimension, memories)  # once per store
        upsert = Call(scope, self._ann.upsert, (scope, memories), write=True)
        ids, large = await self._arun(upsert)
        if large:
            await asyncio.to_thread(self._index, scope.user())
        return ids

    def _index(self, user: Scope) -> None:
        if self._ann.deferred is None:
            self._build_index(user)
        else:
            self._ann.deferred.want(user)

    def _build_index(self, user: Scope) -> bool:
        return self._ann.build(self._owner(), user)

    def _build_later(self, user: Scope) -> bool:
        """A deferred build, once the user is seen (under their scope) to still need it: a
        user forgotten since the ask gets no index naming them. ``False``: it failed."""
        cap = self.vectors.ann_threshold + 1
        try:
            rows = self._run(Call(user, self.vectors.user_rows, (user, cap)))
        except StorageError as exc:
            log.warning("could not count a user's rows for their HNSW index (%s)", exc)
            return False
        return rows < cap or self._build_index(user)

    def _forget_user_steps(self, user: Scope) -> Plan[Counts]:
        """One plan for both halves (``plans``); the blocking steps in a thread on the async."""
        forget = Call(user, self._ops.forget_user, (user,), write=True)
        counts: Counts = yield Step(self._run, self._arun, (forget,), {})
        owner, mine = self._owner(), [user.user_id]  # their index holds their vectors
        yield from step(self._ann.drop, in_thread(self._ann.drop), owner, user.tenant_id, mine)
        yield from step(self._fold_log, in_thread(self._fold_log))
        return counts

    _forget_user, _aforget_user = twins(_forget_user_steps, "_forget_user")


# Operations that take more than their one transaction (an index, the SQLite log, batches).
_OWN_STEPS = frozenset({"upsert_memories", "forget_user", "forget_tenant", "purge_expired"})
# Operations whose SQL step takes the operation itself, not its fields one by one.
_WHOLE = frozenset({"append_to_session", "get_messages"})


def _check(
    dialect: str,
    admin: Target | None,
    schema: str | None,
    embedding_dimension: int | str | None,
    embedding_precision: Precision,
) -> None:
    """The configuration's own contradictions, before anything is opened."""
    if admin is not None and admin.dialect != dialect:
        raise ConfigError("admin_url must name the same kind of database as url")
    if schema is not None and dialect != "postgresql":
        raise ConfigError("schema= is for PostgreSQL")
    if isinstance(embedding_dimension, str) and embedding_dimension != _dimension.AUTO:
        raise ConfigError('embedding_dimension must be a positive integer, "auto" or None')
    if embedding_precision not in PRECISIONS:
        raise ConfigError('embedding_precision must be "full" or "half"')
    if embedding_precision == "half" and dialect != "postgresql":
        raise ConfigError(
            'embedding_precision "half" is for PostgreSQL (pgvector\'s halfvec); '
            f"{dialect} stores float32 vectors: remove it or use PostgreSQL"
        )
