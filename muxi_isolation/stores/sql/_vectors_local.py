"""A user's rows for vector search (the predicate and parameters every plan binds), and
SQLite's exact search: the planner's half that runs in this process (``VectorPlanner``).

SQLite: exact search over the user's rows, ranked with numpy (``similarity``). Without a
filter, on the DB-API connection: the user's stored version, then their rows as kept in
memory at that version (``_vector_cache``), or read in one query (vectors as raw float32
bytes) and kept. With a filter: the matching rows' vectors, then the top ``k`` rows whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    LargeBinary,
    Row,
    Select,
    String,
    bindparam,
    select,
    type_coerce,
)
from sqlalchemy.dialects import sqlite

from ...records import Memory
from ...scope import Scope, known_scope
from ..similarity import mismatch, row_norms, top_exact, top_float32
from ._schema import Tables
from ._vector_cache import Kept, VectorCache, versions_table

if TYPE_CHECKING:
    from ._vectors import Search

__all__ = ["LocalSearch", "Scored", "memory_of", "row_to_memory"]

Scored = tuple[Memory, float]


def row_to_memory(row: Row[Any]) -> Memory:
    return memory_of(row._mapping)


def memory_of(m: Mapping[Any, Any]) -> Memory:
    """A memory from a row's columns by name (SQLAlchemy's row, or ``_pipeline``'s)."""
    return Memory(
        m["id"],
        m["content"],
        dict(m["metadata"] or {}),
        m["embedding"],
        m["created_at"],
        known_scope(m["tenant_id"], m["user_id"], m["session_id"]),
    )


class LocalSearch:
    """The user's rows (``_scope``, ``_params``) and SQLite's exact search, for
    ``VectorPlanner`` (which holds ``tables`` and ``cache``)."""

    tables: Tables
    cache: VectorCache

    def _scope(self, user: Scope | None) -> list[ColumnElement[bool]]:
        """The user's embedded rows; ``None``: the same with bound ``muxi_tenant``/``muxi_user``."""
        t = self.tables.memories
        tenant = bindparam("muxi_tenant") if user is None else user.tenant_id
        user_id = bindparam("muxi_user") if user is None else user.user_id
        return [t.c.tenant_id == tenant, t.c.user_id == user_id, t.c.embedding.is_not(None)]

    @staticmethod
    def _params(user: Scope, **more: Any) -> dict[str, Any]:
        return {"muxi_tenant": user.tenant_id, "muxi_user": user.user_id, **more}

    def _vectors_select(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        """The user's ids and vectors as stored (packed float32): no per-row decoding."""
        t = self.tables.memories
        raw = type_coerce(t.c.embedding, LargeBinary)
        return select(t.c.id, raw).where(*self._scope(None), *where)

    @cached_property
    def _rows_stmt(self) -> Select[Any]:
        t = self.tables.memories
        wanted = t.c.id.in_(bindparam("muxi_ids", expanding=True))
        return select(t).where(*self._scope(None)[:2], wanted)

    @cached_property
    def _local_sql(self) -> tuple[str, str]:
        """An unfiltered SQLite search's two statements as SQLite's own SQL, the tenant and
        user their parameters: the user's version, and the user's embedded rows as stored
        (the vector as raw float32 bytes, the metadata and time as text: decoded only for
        the rows a search returns)."""
        t, v = self.tables.memories, versions_table(self.tables)
        mine = [v.c.tenant_id == bindparam("muxi_tenant"), v.c.user_id == bindparam("muxi_user")]
        version = select(v.c.version).where(*mine)
        raw = type_coerce(t.c.embedding, LargeBinary)
        metadata, created = (type_coerce(t.c[n], String) for n in ("metadata", "created_at"))
        columns = [t.c.id, raw, t.c.tenant_id, t.c.user_id, t.c.content, metadata, created]
        rows = select(*columns, t.c.session_id).where(*self._scope(None))
        return _sqlite_sql(version), _sqlite_sql(rows)

    @cached_property
    def _decoders(self) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """The metadata's and created_at's result processors, as SQLAlchemy applies them."""
        t = self.tables.memories
        found = []
        for name in ("metadata", "created_at"):
            kind = t.c[name].type
            found.append(kind.dialect_impl(_SQLITE).result_processor(_SQLITE, None) or _same)
        return found[0], found[1]

    def search_on_driver(self, db: Any, s: Search[list[float]]) -> list[Scored]:
        """An unfiltered SQLite search on the DB-API connection ``db`` (sqlite3's, or the
        aiosqlite adapter's), in the caller's transaction: the user's version, then the kept
        copy of that very version, or the user's rows read in one query (and kept)."""
        if s.k <= 0:
            return []
        user = s.user
        key = (user.tenant_id, user.user_id)
        cur = db.cursor()
        try:
            cur.execute(self._local_sql[0], key)  # the aiosqlite adapter returns None
            found = cur.fetchone()
            version = None if found is None else int(found[0])
            if version is None:  # no memories, or forgotten (maybe elsewhere)
                self.cache.drop(*key)
            kept = None if version is None else self.cache.get(key, version)
            if kept is None:
                cur.execute(self._local_sql[1], key)
                kept = _read_kept(cur.fetchall(), s, version)
                if version is not None:
                    self.cache.put(key, kept)
        finally:
            cur.close()
        return [(self._kept_memory(kept, i), score) for i, score in _rank(kept, s)]

    def _kept_memory(self, kept: Kept, i: int) -> Memory:
        """Row ``i`` of a kept copy, as ``row_to_memory`` makes it from the stored row."""
        tenant_id, user_id, content, metadata, created_at, session_id = kept.rows[i]
        load_json, load_time = self._decoders
        return Memory(
            kept.ids[i],
            content,
            dict(load_json(metadata) or {}),
            kept.matrix[i].tolist(),  # float32 to float: what unpacking the blob gives
            load_time(created_at),
            known_scope(tenant_id, user_id, session_id),
        )

    def _exact_local(self, conn: Connection, s: Search[list[float]]) -> list[Scored]:
        if not s.where:
            return self.search_on_driver(conn.connection.dbapi_connection, s)
        # A filter selects rows by metadata: read the matching rows' vectors, keep nothing.
        rows = conn.execute(self._vectors_select(s.where), self._params(s.user)).all()
        ids: list[str] = [row[0] for row in rows]
        best = top_exact(
            s.query, _matrix([row[1] for row in rows], len(s.query)), s.k, ids.__getitem__
        )
        if not best:
            return []
        wanted = [ids[i] for i, _ in best]
        full = conn.execute(self._rows_stmt, self._params(s.user, muxi_ids=wanted))
        by_id = {row.id: row_to_memory(row) for row in full}
        return [(by_id[ids[i]], score) for i, score in best if ids[i] in by_id]


_SQLITE = sqlite.dialect()
_SMALL = 128  # rows up to which scoring every row exactly beats the float32 screen


def _same(value: Any) -> Any:
    return value


def _sqlite_sql(stmt: Select[Any]) -> str:
    """SQLite's SQL for ``stmt``, whose parameters are the tenant and the user, in order."""
    compiled = stmt.compile(dialect=_SQLITE)
    assert compiled.positiontup == ["muxi_tenant", "muxi_user"], compiled.positiontup
    return str(compiled)


def _matrix(blobs: list[bytes], dimension: int) -> Any:
    """Packed float32 vectors as one matrix; one of another length than the query is an
    error, as scoring it would be."""
    for blob in blobs:
        if len(blob) != 4 * dimension:
            raise mismatch(len(blob) // 4, dimension)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)


def _read_kept(rows: list[Any], s: Search[list[float]], version: int | None) -> Kept:
    ids = [row[0] for row in rows]
    matrix = _matrix([row[1] for row in rows], len(s.query))
    others = [tuple(row[2:]) for row in rows]
    text = sum(len(r[2]) + len(r[3] or "") for r in others) + 200 * len(others)
    return Kept(version or 0, ids, matrix, row_norms(matrix), others, text)


def _rank(kept: Kept, s: Search[list[float]]) -> list[tuple[int, float]]:
    """The kept rows' exact top ``k``: a small user's rows all scored in float64 (numpy's
    fixed cost per call is most of it), a larger one's through the float32 screen."""
    if not kept.ids:
        return []
    if len(kept.ids) > _SMALL:
        return top_float32(s.query, kept.matrix, kept.norms, s.k, kept.ids.__getitem__, kept.scale)
    return top_exact(s.query, kept.matrix, s.k, kept.ids.__getitem__, kept.norms)
