"""Per-user HNSW indexes on PostgreSQL: an index only for the users a search needs it for.

One HNSW index over the whole table is paid for by every write (each row goes into its
graph: 100k rows took 166 s to load against 0.7 s for ``COPY``), yet serves only the users
above ``ann_threshold``; everyone else is searched exactly. So no such index is made any
more. Instead, when a write takes a user past the threshold, the library builds a partial
index holding that user's rows alone::

    CREATE INDEX CONCURRENTLY "<prefix>memories_hnsw_<hash>" ON <memories>
        USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 128)
        WHERE tenant_id = '<tenant>' AND user_id = '<user>' AND embedding IS NOT NULL

- as the tables' owner (``admin_url``, else the app's role, which then owns them), after
  the write's transaction committed, and concurrently: other users' writes never wait;
- named from a hash of the prefix and the scope (index names are per schema and at most 63
  bytes); the ids are quoted as literals by psycopg, never pasted;
- one builder at a time per user (a session advisory lock); a build that failed leaves an
  invalid index, which the next build drops first;
- used by a search only while ``pg_index.indisvalid`` says so (otherwise exact search);
- dropped when the user or the tenant is forgotten: the index holds the user's vectors.

Building an index once is several times cheaper than inserting the same rows into a live
one, so builds are deferred: the build runs on a background thread once the user has had
no write for ``ann_index_delay`` seconds (2 by default; each write past the threshold
pushes it back, at most ``MAX_PUSH_BACK`` seconds from the first), and a bulk load's rows
go in without any HNSW work. Searches meanwhile are exact. A search that finds a large
user without an index asks for one (a process that stopped before building leaves no
user unindexed for long), and closing the store runs the builds still waiting, so a
short process such as ``muxi-isolation import`` ends with its users indexed.
``ann_index_delay=0`` builds at the end of the write that crossed instead.

Only another user's predicate never implies this one, so the planner cannot use it for
anyone else; statements are sent unprepared (psycopg's unnamed statements are planned with
their parameters' values), which is what lets the predicate match a user's own search.
A store made before this module (schema version 7 and earlier) keeps its shared index and
the old plan for users without an index of their own (``VectorPlanner.shared``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from ...errors import StorageError
from ...records import Memory
from ...scope import Scope
from . import _errors
from ._ops import Ops
from ._schema import HNSW_EF_CONSTRUCTION, HNSW_M, Tables, hnsw_name
from ._vectors import VectorPlanner

__all__ = [
    "DEFAULT_ANN_INDEX_DELAY",
    "MAX_PUSH_BACK",
    "RETRY_AFTER",
    "AnnIndexes",
    "Deferred",
    "index_name",
    "shared_index",
]

log = logging.getLogger("muxi_isolation.stores.sql")
_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_LOCK_SPACE = 0x6D75_7869  # "muxi": the advisory lock's first key, the scope's hash the second
DEFAULT_ANN_INDEX_DELAY = 2.0  # seconds without a write before a user's build
# After a failed build, a search asks again only this much later (a write at once): a
# build that cannot succeed (the app role owns no table and there is no admin_url) is not
# retried, and logged, every few seconds for each search of a large user.
RETRY_AFTER = 600.0
# A user writing without pause is still indexed: a minute's rows into a live index cost
# less than searching a large user exactly for as long as the writes go on.
MAX_PUSH_BACK = 60.0


def _digest(tables: Tables, tenant_id: str, user_id: str) -> bytes:
    scope = "\0".join((tables.prefix, tenant_id, user_id)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(scope).digest()


def index_name(tables: Tables, tenant_id: str, user_id: str) -> str:
    """The user's index's name (unquoted): the prefix's, cut to fit, and 16 hex digits."""
    tail = _digest(tables, tenant_id, user_id).hex()[:16]
    head = f"{tables.prefix}memories_hnsw_"
    return head[: _NAME_BYTES - len(tail)] + tail


def _qualified(conn: Connection, tables: Tables, tenant_id: str, user_id: str) -> str:
    prep = conn.dialect.identifier_preparer
    name = prep.quote(index_name(tables, tenant_id, user_id))
    return f"{prep.quote_schema(str(tables.memories.schema))}.{name}"


def _state(conn: Connection, tables: Tables, qualified: str) -> tuple[bool | None, float]:
    """``True``: the index is there and valid; ``False``: there, not (yet) valid; ``None``;
    and the rows it holds as the catalog counts them (at its build, and at each vacuum)."""
    table = conn.dialect.identifier_preparer.format_table(tables.memories)
    found = conn.execute(
        text(
            "SELECT i.indisvalid AND i.indisready, c.reltuples FROM pg_catalog.pg_index i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indexrelid = to_regclass(:index) AND i.indrelid = to_regclass(:table)"
        ),
        {"index": qualified, "table": table},
    ).first()
    return (None, 0.0) if found is None else (bool(found[0]), float(found[1]))


def shared_index(conn: Connection, tables: Tables) -> bool:
    """Whether the table still has the one shared HNSW index of schema version 7 and before."""
    found = conn.scalar(text("SELECT to_regclass(:i)"), {"i": hnsw_name(conn, tables)})
    return found is not None


@dataclass
class AnnIndexes:
    """Builds, finds and drops the per-user indexes of one backend's memories table."""

    ops: Ops
    vectors: VectorPlanner
    indexed: set[tuple[str, str]] = field(default_factory=set)  # seen valid in this process
    deferred: Deferred | None = None  # the builds waiting for their users' writes to pause

    @property
    def tables(self) -> Tables:
        return self.vectors.tables

    def applies(self) -> bool:
        return self.vectors.dialect == "postgresql" and self.tables.hnsw

    def settle(self, timeout: float | None = None) -> bool:
        """Run the builds waiting for their users' writes to pause now, and wait for them."""
        return self.deferred is None or self.deferred.settle(timeout)

    def close(self) -> None:
        """Run the builds still waiting, then stop their thread."""
        if self.deferred is not None:
            self.deferred.close()

    # -- inside the caller's scoped transactions (the app's role) ---------------------------

    def upsert(
        self, conn: Connection, scope: Scope, memories: Sequence[Memory]
    ) -> tuple[list[str], bool]:
        """The upsert, and whether the user now needs an index it may not have yet."""
        ids = self.ops.upsert_memories(conn, scope, memories)
        key = (scope.tenant_id, scope.user_id)
        if not self.applies() or key in self.indexed or not any(m.embedding for m in memories):
            return ids, False
        threshold = self.vectors.ann_threshold
        return ids, self.vectors.user_rows(conn, scope, threshold + 1) > threshold

    def ready(self, conn: Connection, user: Scope) -> bool:
        """Whether the user's own index is there and valid (searched under the user's scope)."""
        key = (user.tenant_id, user.user_id)
        state, rows = _state(conn, self.tables, _qualified(conn, self.tables, *key))
        valid = state is True
        (self.indexed.add if valid else self.indexed.discard)(key)
        self.vectors.index_rows(key, rows if valid else None)
        return valid

    def tenant_users(self, conn: Connection, tenant_id: str) -> list[str]:
        """The tenant's users holding vectors (before a tenant is forgotten: whose index)."""
        m = self.tables.memories
        where = [m.c.tenant_id == tenant_id, m.c.embedding.is_not(None)]
        return [str(u) for u in conn.scalars(select(m.c.user_id).where(*where).distinct())]

    # -- as the owner, outside any transaction ----------------------------------------------

    def build(self, owner: Engine, user: Scope) -> bool:
        """Make the user's index unless it is there (concurrently: writes go on). The write
        that asked for it is committed: a failure is logged (``False``), searches stay
        exact, and the user's next write tries again."""
        try:
            with _mapped():
                self._build(owner, user)
        except StorageError as exc:
            log.warning("could not build a user's HNSW index (%s); searching exactly", exc)
            return False
        return True

    def _build(self, owner: Engine, user: Scope) -> None:
        from psycopg import sql

        key = (user.tenant_id, user.user_id)
        with _autocommit(owner) as (conn, raw):
            lock = int.from_bytes(_digest(self.tables, *key)[:4], "big", signed=True)
            if not raw.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_SPACE, lock)
            ).fetchone()[0]:
                return  # another process builds it
            try:
                qualified = _qualified(conn, self.tables, *key)
                state, _ = _state(conn, self.tables, qualified)
                if state is False:  # a build that failed (or was cancelled) left it invalid
                    raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")
                if state is not True:
                    t = self.tables.memories
                    ops = (
                        "halfvec_cosine_ops"
                        if self.tables.precision == "half"
                        else "vector_cosine_ops"
                    )
                    statement = sql.SQL(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
                        "USING hnsw (embedding {ops}) WITH (m = {m}, ef_construction = {ef}) "
                        "WHERE tenant_id = {tenant} AND user_id = {user} AND embedding IS NOT NULL"
                    ).format(
                        name=sql.Identifier(index_name(self.tables, *key)),
                        table=sql.Identifier(str(t.schema), t.name),
                        ops=sql.SQL(ops),
                        m=sql.Literal(HNSW_M),
                        ef=sql.Literal(HNSW_EF_CONSTRUCTION),
                        tenant=sql.Literal(user.tenant_id),
                        user=sql.Literal(user.user_id),
                    )
                    raw.execute(statement)
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, lock))
        self.indexed.add(key)

    def drop(self, owner: Engine, tenant_id: str, user_ids: Sequence[str]) -> None:
        """Drop these users' indexes, where there are any (a forgotten user's vectors),
        after their waiting or running builds."""
        if self.deferred is not None:
            self.deferred.cancel(tenant_id, user_ids)
        for user_id in user_ids:
            self.indexed.discard((tenant_id, user_id))
            self.vectors.index_rows((tenant_id, user_id), None)
        if not self.applies() or not user_ids:
            return
        with _mapped(), _autocommit(owner) as (conn, raw):
            names = [_qualified(conn, self.tables, tenant_id, u) for u in user_ids]
            present = conn.scalars(
                text(
                    "SELECT n FROM unnest(CAST(:names AS text[])) n "
                    "WHERE to_regclass(n) IS NOT NULL"
                ),
                {"names": names},
            ).all()
            for qualified in present:
                raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")


@dataclass(frozen=True)
class _Due:
    at: float  # when the build runs
    first: float  # when the user first asked since the last build: ``at`` stays within the cap
    user: Scope


class Deferred:
    """Builds run on one background thread once each user's writes paused for ``delay``
    seconds; a write past the threshold (``want``) pushes its user's build back, but never
    more than ``cap`` seconds past the user's first ask."""

    def __init__(
        self, delay: float, build: Callable[[Scope], bool], cap: float = MAX_PUSH_BACK
    ) -> None:
        self.delay, self.cap = delay, max(cap, delay)
        self._build = build  # False: it failed
        self._due: dict[tuple[str, str], _Due] = {}
        self._failed: dict[tuple[str, str], float] = {}  # when each user's last build failed
        self._busy = 0
        self._building: tuple[str, str] | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def want(self, user: Scope, *, push: bool = True) -> None:
        """Ask for the user's build; ``push=False`` (a search) leaves a due build's time,
        and asks nothing within ``RETRY_AFTER`` of the user's last failed build."""
        key = (user.tenant_id, user.user_id)
        with self._wake:
            now = time.monotonic()
            failed = self._failed.get(key)
            if self._closed or (not push and failed is not None and now < failed + RETRY_AFTER):
                return
            old = self._due.get(key)
            if old is None:
                self._due[key] = _Due(now + self.delay, now, user)
            elif push:
                self._due[key] = _Due(min(now + self.delay, old.first + self.cap), old.first, user)
            else:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="muxi-ann", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until no build is due or running (builds due later are run now)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            self._due = {key: _Due(0.0, d.first, d.user) for key, d in self._due.items()}
            self._wake.notify_all()
            while self._due or self._busy:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def cancel(self, tenant_id: str, user_ids: Sequence[str]) -> None:
        """Drop these users' waiting builds and wait out one running: their indexes are
        about to be dropped, and none may be made after (it would name a forgotten user)."""
        keys = {(tenant_id, user_id) for user_id in user_ids}
        with self._wake:
            for key in keys:
                self._due.pop(key, None)
            while self._building in keys:
                self._wake.wait()

    def close(self) -> None:
        """Run the builds still waiting, then stop the thread."""
        self.settle()
        with self._wake:
            self._closed = True
            self._due.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed:
                    now = time.monotonic()
                    ready = [key for key, d in self._due.items() if d.at <= now]
                    if ready:
                        break
                    nearest = min((d.at for d in self._due.values()), default=None)
                    self._wake.wait(None if nearest is None else nearest - now)
                if self._closed:
                    return
                user = self._due.pop(ready[0]).user
                self._busy += 1
                self._building = ready[0]
            built = False
            try:
                built = self._build(user)
            except Exception:  # the thread serves every user: one failure must not end it
                log.exception("a deferred HNSW index build failed; searching exactly")
            finally:
                with self._wake:
                    if built:
                        self._failed.pop(ready[0], None)
                    else:
                        self._failed[ready[0]] = time.monotonic()
                    self._busy -= 1
                    self._building = None
                    self._wake.notify_all()


@contextmanager
def _mapped() -> Iterator[None]:
    """SQLAlchemy's errors and psycopg's own (statements sent on its connection) mapped."""
    from psycopg import Error

    with _errors.mapped():
        try:
            yield
        except Error as exc:
            raise StorageError(f"the database failed ({_errors.describe(exc)})") from exc


@contextmanager
def _autocommit(engine: Engine) -> Iterator[tuple[Connection, Any]]:
    """An owner connection outside any transaction (``CREATE/DROP INDEX CONCURRENTLY``), and
    its psycopg connection, for statements composed with ``psycopg.sql``."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn, conn.connection.driver_connection
