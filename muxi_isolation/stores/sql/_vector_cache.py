"""SQLite: a user's memories kept in memory between searches, checked on every search.

Reading a user's vectors is most of an exact search on SQLite (10,000 rows of 384 floats
are 15 MB and about 10 ms to read), where an embedded peer keeps each user's index in
memory. So a user's rows are kept here once searched, as one float32 matrix with the
rows' norms and the rows' other columns as stored, until they change: a search then reads
one version row and nothing else (the few rows it returns are decoded from the copy).

"Until they change" is decided by the database, not by this process: a per-user version
in ``memory_versions`` is set to a new random 64-bit value by triggers, in the same
transaction as every insert, update (of any column) and delete of the user's memories,
whoever writes (this process, another one, the command line). A search reads the version
in its own transaction and uses a kept copy only of that very version; a random value
means a user forgotten and written again can never meet an old copy's version. Forgetting
a user or tenant deletes their version rows and drops their copies here. Filtered
searches read the rows (a filter selects rows by metadata, which the copy does not index).

The copies are bounded by ``max_bytes`` per backend, least recently used out first; each
is keyed by the exact (tenant, user) it was read for, in that user's scoped transaction,
and each kept row still carries its stored tenant and user, which the search's results
are verified against like any row read from the database.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Column, Connection, Integer, MetaData, PrimaryKeyConstraint, String, Table

from ..similarity import screen_scale
from ._schema import Tables

__all__ = ["Kept", "VectorCache", "any_update_statements", "version_statements", "versions_table"]

DEFAULT_MAX_BYTES = 256 * 2**20


@cache
def _versions(prefix: str, schema: str | None) -> Table:
    return Table(
        f"{prefix}memory_versions",
        MetaData(schema=schema),
        Column("tenant_id", String(255), nullable=False),
        Column("user_id", String(255), nullable=False),
        Column("version", Integer, nullable=False),
        PrimaryKeyConstraint("tenant_id", "user_id", name=f"{prefix}memory_versions_pkey"),
    )


def versions_table(tables: Tables) -> Table:
    return _versions(tables.prefix, tables.memories.schema)


def version_statements(conn: Connection, tables: Tables) -> list[str]:
    """SQLite: the versions table, its triggers and a version for every user who has
    memories (idempotent). Nothing on PostgreSQL, which searches in SQL."""
    if conn.dialect.name != "sqlite":
        return []
    prep = conn.dialect.identifier_preparer
    versions = versions_table(tables)
    table, bare = prep.format_table(versions), prep.quote(versions.name)
    on = prep.quote(tables.memories.name)
    schema = prep.quote_schema(str(tables.memories.schema))

    # A trigger's statements name tables without schema: its own schema's. An upsert, not
    # INSERT OR REPLACE: a statement's own conflict policy overrides its triggers' ones.
    def bump(row: str) -> str:
        return (
            f"INSERT INTO {bare} (tenant_id, user_id, version) "  # noqa: S608
            f"VALUES ({row}.tenant_id, {row}.user_id, random()) "
            "ON CONFLICT (tenant_id, user_id) DO UPDATE SET version = excluded.version;"
        )

    def trigger(suffix: str, event: str, body: str) -> str:
        name = prep.quote(f"{tables.prefix}memories_version_{suffix}")
        return (
            f"CREATE TRIGGER IF NOT EXISTS {schema}.{name} AFTER {event} ON {on} BEGIN {body} END"
        )

    return [
        f"CREATE TABLE IF NOT EXISTS {table} (tenant_id VARCHAR(255) NOT NULL, "
        "user_id VARCHAR(255) NOT NULL, version INTEGER NOT NULL, "
        f"CONSTRAINT {prep.quote(versions.name + '_pkey')} PRIMARY KEY (tenant_id, user_id)) "
        "WITHOUT ROWID",  # one B-tree to update per written memory, not two
        trigger("insert", "INSERT", bump("new")),
        trigger("delete", "DELETE", bump("old")),
        trigger("update", "UPDATE", bump("old") + bump("new")),  # any column: copies hold all
        f"INSERT OR REPLACE INTO {table} (tenant_id, user_id, version) "  # noqa: S608
        f"SELECT DISTINCT tenant_id, user_id, random() FROM {prep.format_table(tables.memories)}",
    ]


def any_update_statements(conn: Connection, tables: Tables) -> list[str]:
    """SQLite, 7 -> 8: the update trigger fires on any column (it watched the vector and
    the keys; a kept copy now holds the other columns too), and every version moves."""
    statements = version_statements(conn, tables)
    if not statements:
        return []
    prep = conn.dialect.identifier_preparer
    schema = prep.quote_schema(str(tables.memories.schema))
    name = prep.quote(f"{tables.prefix}memories_version_update")
    return [f"DROP TRIGGER IF EXISTS {schema}.{name}", *statements]


@dataclass(frozen=True)
class Kept:
    """One user's vectors as stored at ``version``: ids, float32 rows, float64 norms (and
    their float32 ``screen_scale``), and each row's other columns as stored (``rows``:
    tenant, user, content, metadata text, created_at text, session), so a search at that
    version reads nothing but the version."""

    version: int
    ids: list[str]
    matrix: npt.NDArray[np.float32]
    norms: npt.NDArray[np.float64]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    text_bytes: int = 0  # the rows' strings
    scale: npt.NDArray[np.float32] | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", screen_scale(self.norms))

    @property
    def nbytes(self) -> int:
        arrays = (
            self.matrix.nbytes
            + self.norms.nbytes
            + (0 if self.scale is None else self.scale.nbytes)
        )
        return int(arrays) + 64 * len(self.ids) + self.text_bytes


class VectorCache:
    """Kept copies per (tenant, user), least recently used out first past ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], version: int) -> Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            if kept.version != version:
                self._pop(key)
                return None
            self._kept.move_to_end(key)
            return kept

    def put(self, key: tuple[str, str], kept: Kept) -> None:
        if kept.nbytes > self.max_bytes:
            return
        with self._lock:
            self._pop(key)
            self._kept[key] = kept
            self._bytes += kept.nbytes
            while self._bytes > self.max_bytes:
                self._pop(next(iter(self._kept)))

    def drop(self, tenant_id: str, user_id: str | None = None) -> None:
        """A forgotten user's (or, without ``user_id``, tenant's) copies."""
        with self._lock:
            for key in [k for k in self._kept if k[0] == tenant_id and user_id in (None, k[1])]:
                self._pop(key)

    def __len__(self) -> int:
        return len(self._kept)

    def _pop(self, key: tuple[str, str]) -> Any:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._bytes -= kept.nbytes
        return kept
