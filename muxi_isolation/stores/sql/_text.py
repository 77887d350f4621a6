"""Per-user keyword search on the memories' content: the text half of hybrid search.

- PostgreSQL: full-text search with the tables' text search config (``english`` unless
  configured). A GIN expression index on ``to_tsvector(config, content)`` is kept by
  PostgreSQL on write; the query names the same expression, so the index serves it, and
  no column is added to the rows.
- SQLite: an FTS5 table with the memories as its external content (no second copy of the
  text), kept in step by triggers on insert, update of content and delete.

Both search only the user's rows: the scope (and the caller's filter) is checked on the
memories row itself, joined to the match, so the text index can never hand over another
user's row. Ranked by ``ts_rank_cd`` / ``bm25``, ties by id; ``min(k, matching rows)``.
A query is cut to its words (letters and digits) and ORed, so no query syntax reaches the
database. Users who never search by text pay nothing per search; writes keep the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    bindparam,
    func,
    literal_column,
    select,
    text,
)

from ..keywords import words
from ._schema import Tables
from ._vectors import Scored, Search, row_to_memory

__all__ = ["TextSearcher", "scrub", "text_index_statements"]


def _fts(conn: Connection, tables: Tables) -> tuple[str, str]:
    """The FTS5 table's name: (with its schema, bare), quoted."""
    prep = conn.dialect.identifier_preparer
    bare = prep.quote(f"{tables.prefix}memories_fts")
    schema = tables.memories.schema
    return (f"{prep.quote_schema(schema)}.{bare}" if schema else bare), bare


def text_index_statements(conn: Connection, tables: Tables) -> list[str]:
    """The DDL of the memories' text index (idempotent); existing rows are indexed.

    Names come from the validated prefix and schema, quoted (``_schema.check_name``)."""
    prep = conn.dialect.identifier_preparer
    memories = prep.format_table(tables.memories)
    if conn.dialect.name == "postgresql":
        name = prep.quote(f"{tables.prefix}memories_text")
        return [
            f"CREATE INDEX IF NOT EXISTS {name} ON {memories} USING gin ({_tsvector_sql(tables)})"
        ]
    fts, bare = _fts(conn, tables)
    on = prep.quote(tables.memories.name)
    # A trigger's statements name tables without schema: its own schema's.
    add = f"INSERT INTO {bare}(rowid, content) VALUES (new.rowid, new.content);"  # noqa: S608
    drop = f"INSERT INTO {bare}({bare}, rowid, content) VALUES ('delete', old.rowid, old.content);"  # noqa: S608

    def trigger(suffix: str, event: str, body: str) -> str:
        name = fts.removesuffix(bare) + prep.quote(f"{tables.prefix}memories_fts_{suffix}")
        return f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {on} BEGIN {body} END"

    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5("
        f"content, content='{tables.memories.name}', content_rowid='rowid')",
        trigger("insert", "INSERT", add),
        trigger("delete", "DELETE", drop),
        trigger("update", "UPDATE OF content", drop + " " + add),
        f"INSERT INTO {fts}({bare}) VALUES ('rebuild')",  # noqa: S608
    ]


def scrub(conn: Connection, tables: Tables) -> None:
    """SQLite: merge the FTS5 index into one segment, so a deleted row's words leave it
    (a delete only marks them; under ``secure_delete`` the freed pages are zeroed)."""
    if conn.dialect.name == "sqlite":
        fts, bare = _fts(conn, tables)
        conn.exec_driver_sql(f"INSERT INTO {fts}({bare}) VALUES ('optimize')")  # noqa: S608


def _tsvector_sql(tables: Tables) -> str:
    """The indexed expression, spelled exactly as the query spells it (the planner matches)."""
    return f"to_tsvector('{tables.text_config}'::regconfig, content)"


@dataclass
class TextSearcher:
    tables: Tables
    dialect: str

    def search(self, conn: Connection, s: Search[str]) -> list[Scored]:
        terms = words(s.query)
        if s.k == 0 or not terms:
            return []
        if self.dialect == "postgresql":
            return self._postgres(conn, s, terms)
        return self._sqlite(conn, s, terms)

    def _postgres(self, conn: Connection, s: Search[str], terms: list[str]) -> list[Scored]:
        t = self.tables.memories
        config: ColumnElement[Any] = literal_column(f"'{self.tables.text_config}'::regconfig")
        vector = func.to_tsvector(config, t.c.content)
        query = func.to_tsquery(config, bindparam("muxi_text"))
        rank = func.ts_rank_cd(vector, query, type_=Float).label("rank")
        mine = [t.c.tenant_id == s.user.tenant_id, t.c.user_id == s.user.user_id]
        stmt = (
            select(t, rank)
            .where(*mine, vector.op("@@")(query), *s.where)
            .order_by(rank.desc(), t.c.id)
            .limit(s.k)
        )
        # Words are letters and digits only: quoted lexemes ORed, never tsquery syntax.
        params = {"muxi_text": " | ".join(f"'{w}'" for w in terms)}
        return [(row_to_memory(row), float(row.rank)) for row in conn.execute(stmt, params)]

    def _sqlite(self, conn: Connection, s: Search[str], terms: list[str]) -> list[Scored]:
        t = self.tables.memories
        fts, fts_name = _fts(conn, self.tables)
        match = " OR ".join(f'"{w}"' for w in terms)
        hits = text(
            f"SELECT rowid AS fts_rowid, bm25({fts_name}) AS fts_rank FROM {fts} "  # noqa: S608
            f"WHERE {fts_name} MATCH :muxi_text"
        ).columns(literal_column("fts_rowid"), literal_column("fts_rank", Float))
        found = hits.subquery("found")
        rowid: ColumnElement[Any] = literal_column(
            f"{conn.dialect.identifier_preparer.format_table(t)}.rowid"
        )
        stmt = (
            select(t, found.c.fts_rank)
            .select_from(t)
            .join(found, rowid == found.c.fts_rowid)
            .where(t.c.tenant_id == s.user.tenant_id, t.c.user_id == s.user.user_id, *s.where)
            .order_by(found.c.fts_rank, t.c.id)
            .limit(s.k)
        )
        rows: Any = conn.execute(stmt, {"muxi_text": match})
        return [(row_to_memory(row), -float(row.fts_rank)) for row in rows]
