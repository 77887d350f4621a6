"""A user's memories: upsert (with the quota), read, list, count, delete, search."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

from sqlalchemy import Connection, delete, func, select

from ...filters import Filter
from ...quotas import MEMORIES, check_count
from ...records import Memory
from ...scope import Scope
from . import _bulk
from ._dimension import mismatch
from ._driver import batch_sql
from ._ops_base import OpsBase, utc_now
from ._text import TextSearcher
from ._vectors import Scored, Search, row_to_memory

__all__ = ["MemoryOps"]

MEMORY_KEYS = [
    "tenant_id",
    "user_id",
    "id",
    "session_id",
    "content",
    "metadata",
    "embedding",
    "created_at",
]


class MemoryOps(OpsBase):
    """The user's memories."""

    def upsert_memories(
        self, conn: Connection, scope: Scope, memories: Sequence[Memory]
    ) -> list[str]:
        dimension = self.t.dimension
        latest: dict[str, Memory] = {}
        for memory in memories:
            vec = memory.embedding
            if vec is not None and dimension is not None and len(vec) != dimension:
                raise mismatch(dimension, len(vec))
            latest[memory.id] = memory
        self._check_memories(conn, scope, list(latest))
        now = utc_now()
        if self.dialect == "postgresql":  # one short statement over arrays (``_bulk``)
            _bulk.upsert(conn, self.t, scope, list(latest.values()), now)
            return [memory.id for memory in memories]
        t = self.t.memories
        sql, columns = self._once(
            "upsert_memories", lambda: batch_sql(conn, self._memories_upsert(), t, MEMORY_KEYS)
        )
        kept = list(latest.values())
        rows: dict[str, list[Any]] = {
            "id": [m.id for m in kept],
            "content": [m.content for m in kept],
            "metadata": [m.metadata for m in kept],
            "embedding": [m.embedding for m in kept],
            "created_at": [m.created_at or now for m in kept],
        }
        scoped: dict[str, str | None] = {"tenant_id": scope.tenant_id, "user_id": scope.user_id}
        scoped["session_id"] = scope.session_id
        # Column by column, then zipped: a quarter less time than a tuple per row. A value
        # shared by the rows (the scope's; mostly ``now``) is processed once.
        by_column: list[Any] = []
        for name, process in columns:
            if name in scoped:
                one = scoped[name]
                by_column.append(repeat(one if process is None else process(one), len(kept)))
            elif process is None:
                by_column.append(rows[name])
            elif name == "created_at":
                by_column.append(_each_once(process, rows[name]))
            else:
                by_column.append(list(map(process, rows[name])))
        rows_in_order = list(zip(*by_column, strict=True))
        # Many rows per statement, not an executemany: SQLite flushes the FTS5 index at each
        # statement that fires its trigger, which cost 4x the rest of the insert per row.
        for start in range(0, len(rows_in_order), _ROWS_PER_STATEMENT):
            chunk = rows_in_order[start : start + _ROWS_PER_STATEMENT]
            flat = tuple(value for row in chunk for value in row)
            conn.exec_driver_sql(_many_rows(sql, len(columns), len(chunk)), flat)
        return [memory.id for memory in memories]

    def _memories_upsert(self) -> Any:
        t = self.t.memories
        stmt = self._insert(t)
        changing = ("session_id", "content", "metadata", "embedding", "created_at")
        return stmt.on_conflict_do_update(
            index_elements=[t.c.tenant_id, t.c.user_id, t.c.id],
            set_={name: stmt.excluded[name] for name in changing},
        )

    def _check_memories(self, conn: Connection, user: Scope, ids: list[str]) -> None:
        """The ids new to this user must fit its quota (replacing one adds nothing)."""
        allowed = self.limits.for_tenant(user.tenant_id).max_memories_per_user
        if allowed is None:
            return
        t = self.t.memories
        held = self._counted(conn, MEMORIES, t, user)
        kept = select(func.count()).select_from(t).where(*self._user(t, user), t.c.id.in_(ids))
        check_count(MEMORIES, allowed, held, len(ids) - int(conn.scalar(kept) or 0))

    def get_memories(self, conn: Connection, user: Scope, ids: list[str]) -> list[Memory]:
        t = self.t.memories
        found = conn.execute(select(t).where(*self._user(t, user), t.c.id.in_(ids)))
        by_id = {row.id: row_to_memory(row) for row in found}
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def list_memories(
        self,
        conn: Connection,
        user: Scope,
        node: Filter | None,
        limit: int | None,
        offset: int | None,
    ) -> list[Memory]:
        t = self.t.memories
        query = (
            select(t)
            .where(*self._user(t, user), *self._filter(node))
            .order_by(t.c.created_at, t.c.id)
            .limit(limit)
            .offset(offset or None)
        )
        return [row_to_memory(row) for row in conn.execute(query)]

    def count_memories(self, conn: Connection, user: Scope, node: Filter | None) -> int:
        t = self.t.memories
        query = select(func.count()).select_from(t)
        return int(conn.scalar(query.where(*self._user(t, user), *self._filter(node))) or 0)

    def delete_memories(
        self, conn: Connection, user: Scope, ids: list[str] | None, node: Filter | None
    ) -> int:
        if ids is not None and not ids:
            return 0
        t = self.t.memories
        where = [*self._user(t, user), *self._filter(node)]
        if ids is not None:
            where.append(t.c.id.in_(ids))
        return conn.execute(delete(t).where(*where)).rowcount

    def search_memories(
        self, conn: Connection, user: Scope, vector: list[float], k: int, node: Filter | None
    ) -> list[Scored]:
        self._check_query(vector)
        return self.vectors.search(conn, Search(user, vector, k, self._filter(node)))

    def search_on_driver(
        self, db: Any, user: Scope, vector: list[float], k: int, node: Filter | None
    ) -> list[Scored]:
        """``search_memories`` without a filter: on SQLite's DB-API connection, or on
        PostgreSQL in one round trip (a large user's plan after it; ``_pipeline``)."""
        assert node is None
        self._check_query(vector)
        if self.dialect == "postgresql":
            return self.vectors.search_pipelined(db, Search(user, vector, k, []))
        return self.vectors.search_on_driver(db, Search(user, vector, k, []))

    def _check_query(self, vector: list[float]) -> None:
        """A query of another length than the store's recorded dimension is refused."""
        dimension = self.t.dimension
        if dimension is not None and len(vector) != dimension:
            raise mismatch(dimension, len(vector), "query")

    def search_text(
        self, conn: Connection, user: Scope, query: str, k: int, node: Filter | None
    ) -> list[Scored]:
        """The user's ``k`` memories best matching ``query``'s words (``_text``)."""
        search = Search(user, query, k, self._filter(node))
        return TextSearcher(self.t, self.dialect).search(conn, search)


_ROWS_PER_STATEMENT = 120  # x 8 columns: under 999, the oldest SQLite's parameter limit


@lru_cache(maxsize=2 * _ROWS_PER_STATEMENT)
def _many_rows(sql: str, width: int, rows: int) -> str:
    """The one-row INSERT ``sql`` with ``rows`` rows of ``width`` parameters."""
    one = "(" + ", ".join(["?"] * width) + ")"
    assert sql.count(f"VALUES {one}") == 1, sql
    return sql.replace(f"VALUES {one}", "VALUES " + ", ".join([one] * rows))


def _each_once(process: Any, values: list[Any]) -> list[Any]:
    """``process`` over ``values``, computed once per distinct value."""
    done: dict[Any, Any] = {}
    for value in values:
        if value not in done:
            done[value] = process(value)
    return [done[value] for value in values]
