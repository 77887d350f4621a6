"""Per-user nearest-neighbour search: exact for small users, HNSW for large ones.

A shared HNSW index filtered by user post-filters the index's candidates: a user holding
1% of the rows gets almost nothing back from ``WHERE user_id = ? ORDER BY embedding <=> q
LIMIT k``. So the plan is made per user, always returning ``min(k, matching rows)``:

- PostgreSQL, user with at most ``ann_threshold`` embedded rows: exact search over the
  user's rows, reached through the composite B-tree (a MATERIALIZED CTE keeps the planner
  off the HNSW index). Cost grows with the user's rows, not the table's. Unfiltered, it
  is one round trip (``search_pipelined``), the user's rows counted in the same scan.
- PostgreSQL, larger user with an HNSW index of their own (``_ann_index``: made when a
  write takes them past the threshold, used once valid): HNSW over their rows alone,
  ``ef_search`` candidates (by the size of their index), re-sorted; sorting is priced
  out in that transaction so the planner takes the index it was chosen for. Until the
  index is valid: exact search. If the scan yields fewer than ``k`` (a selective
  filter), exact search runs instead.
- A store made before per-user indexes keeps its one shared HNSW index (``shared``): a
  large user without an index of their own who holds at least ``ann_min_fraction`` of the
  table is searched on it with pgvector 0.8's iterative scan (``hnsw.iterative_scan =
  relaxed_order``, ``max_scan_tuples``); it visits about ``k / fraction`` index tuples
  before it has ``k`` of the user's, so a sliver of a huge table is searched exactly.
- SQLite: exact search over the user's rows, ranked with numpy (``_vectors_local``).

The threshold and the HNSW settings are measured by ``bench/vector_search.py``; statements
are planned per execution (psycopg's server-side prepare is off), so each plan knows its user.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Row,
    Select,
    bindparam,
    func,
    literal,
    select,
    text,
    true,
)

from ...scope import Scope
from . import _rls
from ._pipeline import Pipelined
from ._schema import Tables
from ._vector_cache import VectorCache
from ._vectors_local import LocalSearch, Scored, memory_of, row_to_memory

__all__ = [
    "DEFAULT_ANN_MIN_FRACTION",
    "DEFAULT_ANN_THRESHOLD",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_MAX_SCAN_TUPLES",
    "Scored",
    "Search",
    "VectorPlanner",
    "row_to_memory",
]

DEFAULT_ANN_THRESHOLD = 2000
DEFAULT_ANN_MIN_FRACTION = 0.005
DEFAULT_EF_SEARCH = 400
# HNSW candidates per square root of a user's index rows (``ef_search=None``, the default).
# On bench/peers.py's clustered corpus (384 dimensions, new queries) recall@10 reached 0.99
# at ef_search 100-120 for a 3,683-row user (1.6-2.0 per root), 150-200 at 5,054 rows
# (2.1-2.8), 200-300 at 7,895 (2.3-3.4) and about 400 at 17,900 (3.0), where three builds
# of that user's index gave 0.9875-0.9917 at 400: 4 per root (536 there) keeps a margin
# everywhere. At 3.5 per root the 7,895-row user's recall fell from 0.995 to 0.991.
EF_PER_ROOT = 4.0
MAX_EF_SEARCH = 1000  # pgvector's limit
DEFAULT_MAX_SCAN_TUPLES = 50_000
_MAX_LARGE = 100_000
# A large user's plan (their rows counted, their index looked up) is made again at most
# this long after it last found their index: a user shrunk, or an index dropped by another
# process, is seen within it (the search on a missing index is exact meanwhile, just slower).
_RECHECK = 30.0

Q = TypeVar("Q")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Search(Generic[Q]):
    """One search of a user's memories (``VectorPlanner``, ``TextSearcher``): whose, for
    what (a vector, or words), how many, and the caller's filter. Each path of a search
    takes it whole, so the plan's steps cannot be handed mismatched parts."""

    user: Scope
    query: Q
    k: int
    where: Sequence[ColumnElement[bool]]


@dataclass
class VectorPlanner(LocalSearch):
    tables: Tables
    dialect: str
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    ann_min_fraction: float = DEFAULT_ANN_MIN_FRACTION
    ef_search: int | None = None  # None: by the size of the user's index; else fixed
    max_scan_tuples: int = DEFAULT_MAX_SCAN_TUPLES
    set_local: bool = False
    shared: bool = False  # the one HNSW index of stores made before per-user indexes
    own_index: Callable[[Connection, Scope], bool] | None = None  # ``AnnIndexes.ready``
    wants_index: Callable[[Scope], None] | None = None  # ``Deferred.want``: asks, never waits
    cache: VectorCache = field(default_factory=VectorCache)
    # Users last seen above the threshold: when their plan last found their index (or None).
    _large: dict[tuple[str, str], float | None] = field(default_factory=dict)
    _index_rows: dict[tuple[str, str], float] = field(default_factory=dict)  # ``index_rows``

    def search(self, conn: Connection, s: Search[list[float]]) -> list[Scored]:
        if s.k == 0:
            return []
        if self.dialect == "sqlite":
            return self._exact_local(conn, s)
        if not self.tables.hnsw:
            return self._exact(conn, s)
        # One statement for a small user (the common case): the user's rows are counted
        # inside the exact search, which scans nothing once the count passes the threshold.
        key = (s.user.tenant_id, s.user.user_id)
        rows, hits = self._gated(conn, s)
        if rows <= self.ann_threshold:
            self._large.pop(key, None)
            return hits
        if self._ann_ready(conn, s.user):
            self._mark(key, time.monotonic())
            hits = self._ann(conn, s)
            if len(hits) >= s.k:
                return hits
        else:
            self._mark(key, None)
            if self.wants_index is not None:
                self.wants_index(s.user)
        return self._exact(conn, s)

    def plan(self, conn: Connection, user: Scope) -> str:
        """Which path a search for this user takes: "exact" or "hnsw"."""
        if self.dialect != "postgresql" or not self.tables.hnsw:
            return "exact"
        if self.user_rows(conn, user, self.ann_threshold + 1) <= self.ann_threshold:
            return "exact"
        return "hnsw" if self._ann_ready(conn, user) else "exact"

    def _ann_ready(self, conn: Connection, user: Scope) -> bool:
        """An HNSW index serves this large user: its own (``_ann_index``), once valid, or
        the shared one of an older store, unless the user holds a sliver of the table."""
        if self.own_index is not None and self.own_index(conn, user):
            return True
        return self.shared and self._ann_pays(conn, user)

    def _ann_pays(self, conn: Connection, user: Scope) -> bool:
        """For a user above the threshold: unless the user holds a sliver of a huge table,
        which is cheaper to search exactly."""
        share = math.ceil(self.ann_min_fraction * self.table_rows(conn))
        return not (share > self.ann_threshold and self.user_rows(conn, user, share) < share)

    def table_rows(self, conn: Connection) -> float:
        """The planner's estimate of the table's rows (0 when never analyzed)."""
        name = conn.dialect.identifier_preparer.format_table(self.tables.memories)
        found = conn.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"), {"name": name}
        )
        return max(float(found or 0.0), 0.0)

    # The scope, query and k are bound parameters, so searches without a caller filter (the
    # common case) run statements built once: building and keying the statement trees took
    # about 0.5 ms of a 2 ms search.

    @cached_property
    def _count_stmt(self) -> Select[Any]:
        t = self.tables.memories
        capped = select(literal(1)).select_from(t).where(*self._scope(None))
        return select(func.count()).select_from(capped.limit(bindparam("muxi_cap")).subquery())

    @cached_property
    def _exact_stmt(self) -> Select[Any]:
        return self._exact_select([])

    @cached_property
    def _gated_stmt(self) -> Select[Any]:
        return self._gated_select([])

    @cached_property
    def _ann_stmt(self) -> Select[Any]:
        return self._ann_select([])

    def user_rows(self, conn: Connection, user: Scope, cap: int) -> int:
        """The user's embedded rows, counted up to ``cap`` (on the partial index)."""
        return int(conn.scalar(self._count_stmt, self._params(user, muxi_cap=cap)) or 0)

    def _distance(self, vector: list[float] | None) -> ColumnElement[float]:
        column = self.tables.memories.c.embedding
        query = bindparam("query_vector", vector, type_=column.type)
        return column.op("<=>", return_type=Float)(query)

    def _exact(self, conn: Connection, s: Search[list[float]]) -> list[Scored]:
        params = self._params(s.user, query_vector=s.query, muxi_k=s.k)
        stmt = self._exact_stmt if not s.where else self._exact_select(s.where)
        return [_scored(row) for row in conn.execute(stmt, params)]

    def _gated(self, conn: Connection, s: Search[list[float]]) -> tuple[int, list[Scored]]:
        """The user's embedded rows (counted up to the threshold + 1) and, when they are
        within the threshold, the exact search's hits, from one statement."""
        stmt = self._gated_stmt if not s.where else self._gated_select(s.where)
        rows = conn.execute(stmt, self._gated_params(s)).all()
        return _counted([row._mapping for row in rows])

    def _gated_params(self, s: Search[list[float]]) -> dict[str, Any]:
        cap = self.ann_threshold + 1
        return self._params(s.user, query_vector=s.query, muxi_k=s.k, muxi_cap=cap)

    def search_pipelined(self, db: Pipelined, s: Search[list[float]]) -> list[Scored]:
        """An unfiltered PostgreSQL search in one round trip, its scope opened and its
        transaction committed in the same flight: exact, the user's rows counted in the same
        scan (``_counted_stmt``). A user it finds above the threshold is searched by their
        plan (``search``: their own HNSW index, asked for if missing, in a scoped transaction
        after the flight) at once; once that plan found their index, in one flight on it
        (``_ann_stmt``, its settings made in the flight), the plan looked at again every
        ``_RECHECK`` seconds and whenever the index yields fewer than ``k`` rows."""
        if s.k <= 0:
            return []
        key = (s.user.tenant_id, s.user.user_id)
        params = self._params(s.user, query_vector=s.query, muxi_k=s.k)
        if key not in self._large:
            rows, hits = _counted(db.rows(self._counted_stmt, params))
            if rows <= self.ann_threshold or not self.tables.hnsw:
                return hits
            self._mark(key, None)
        else:
            indexed = self._large[key]
            if indexed is not None and time.monotonic() - indexed < _RECHECK:
                found = db.rows(self._ann_stmt, params, settings=self._ann_settings(s.user, s.k))
                if len(found) >= s.k:
                    return [_scored_of(row) for row in found]
        return self.search(db.scoped(), s)

    def _mark(self, key: tuple[str, str], indexed: float | None) -> None:
        """Remember a large user, and when their plan last found their index (``None``)."""
        _remember(self._large, key, indexed)

    @cached_property
    def _counted_stmt(self) -> Select[Any]:
        """``_exact_select`` with the user's rows counted over its kept scan, so the count
        needs no scan of the table of its own: ``_gated_stmt``'s count, scan and join cost
        about twice as much on the server for a small user. It scores every row of the
        user, hence only for users not known to be large."""
        return self._exact_select([], counted=True)

    def _gated_select(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        """``_exact_select`` behind the capped count: the count's one row, left-joined to
        the hits (so an empty result still says how many rows the user has); the scan runs
        only when the count is within the threshold (a one-time filter in PostgreSQL)."""
        t = self.tables.memories
        capped = select(literal(1)).select_from(t).where(*self._scope(None))
        counted = select(func.count().label("muxi_rows")).select_from(
            capped.limit(bindparam("muxi_cap")).subquery("capped")
        )
        n = counted.cte("n")
        small = select(n.c.muxi_rows).scalar_subquery() < bindparam("muxi_cap")
        hits = self._exact_select([*where, small]).subquery("hits")
        return (
            select(n.c.muxi_rows, hits)
            .select_from(n.outerjoin(hits, true()))
            .order_by(hits.c.distance, hits.c.id)
        )

    def _exact_select(
        self, where: Sequence[ColumnElement[bool]], counted: bool = False
    ) -> Select[Any]:
        """The user's ``k`` nearest rows, exactly: every row's distance (ids only, so the
        scan carries no content), the top ``k``, then each of those rows whole by its key (a
        lateral lookup: a join back planned from a guessed row count read every row of the
        user whole, once per hit). ``counted``: each result also says how many rows the scan
        saw (``muxi_rows``, counted over the kept scan: a window over it kept every row's
        vector too, and spilled to disk from a few thousand rows)."""
        t = self.tables.memories
        mine = (
            select(t.c.id, self._distance(None).label("distance"))
            .where(*self._scope(None), *where)
            .cte("mine")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        top = (
            select(*mine.c).order_by(mine.c.distance, mine.c.id).limit(bindparam("muxi_k"))
        ).subquery("top")
        # LIMIT 1 (the key is unique) keeps the planner from flattening the lookup into a
        # join it would plan again from its guess.
        by_key = select(t).where(*self._scope(None)[:2], t.c.id == top.c.id).limit(1)
        row = by_key.lateral("row")
        extra = [select(func.count()).select_from(mine).label("muxi_rows")] if counted else []
        return (
            select(*row.c, top.c.distance, *extra)
            .select_from(top.join(row, true()))
            .order_by(top.c.distance, top.c.id)
        )

    def _ann_settings(self, user: Scope, k: int) -> dict[str, str]:
        """The HNSW statement's settings: sorting priced out (the planner takes the index it
        was chosen for), pgvector's iterative scan, and ``ef_search`` candidates: the
        store's, if it fixed one; else ``EF_PER_ROOT`` per square root of the rows in the
        user's own index (``DEFAULT_EF_SEARCH`` while that size is unknown); at least k."""
        ef = self.ef_search
        if ef is None:
            rows = self._index_rows.get((user.tenant_id, user.user_id))
            by_size = DEFAULT_EF_SEARCH if rows is None else EF_PER_ROOT * math.sqrt(rows)
            ef = min(math.ceil(by_size), MAX_EF_SEARCH)
        return {
            "enable_sort": "off",
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.ef_search": str(max(ef, k)),
            "hnsw.max_scan_tuples": str(self.max_scan_tuples),
        }

    def index_rows(self, key: tuple[str, str], rows: float | None) -> None:
        """The rows in a user's own HNSW index, as the catalog counts them (``None``: no
        index, or not known)."""
        if rows is None or rows <= 0:  # never counted: -1 (a vacuum counts it)
            self._index_rows.pop(key, None)
            return
        _remember(self._index_rows, key, rows)

    def _ann(self, conn: Connection, s: Search[list[float]]) -> list[Scored]:
        _rls.apply_settings(conn, self._ann_settings(s.user, s.k), set_local=self.set_local)
        params = self._params(s.user, query_vector=s.query, muxi_k=s.k)
        stmt = self._ann_stmt if not s.where else self._ann_select(s.where)
        return [_scored(row) for row in conn.execute(stmt, params)]

    def _ann_select(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        t = self.tables.memories
        distance = self._distance(None)
        found = (
            select(t, distance.label("distance"))
            .where(*self._scope(None), *where)
            .order_by(distance)
            .limit(bindparam("muxi_k"))
            .cte("found")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        return select(found).order_by(found.c.distance, found.c.id)


def _remember(kept: dict[tuple[str, str], V], key: tuple[str, str], value: V) -> None:
    """``kept[key] = value``, the dict bounded at ``_MAX_LARGE`` users (far above any
    store's large users): past it, it starts again empty."""
    if key not in kept and len(kept) >= _MAX_LARGE:
        kept.clear()
    kept[key] = value


def _scored(row: Row[Any]) -> Scored:
    return _scored_of(row._mapping)


def _scored_of(m: Mapping[Any, Any]) -> Scored:
    distance = float(m["distance"])
    similarity = 0.0 if math.isnan(distance) else 1.0 - distance
    return memory_of(m), similarity


def _counted(rows: Sequence[Mapping[Any, Any]]) -> tuple[int, list[Scored]]:
    """A gated search's rows: the user's rows as counted, and the hits (none past the cap)."""
    count = int(rows[0]["muxi_rows"]) if rows else 0
    return count, [_scored_of(row) for row in rows if row["id"] is not None]
