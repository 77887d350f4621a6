"""The tables of agent-graph storage (LangGraph checkpoints and store items).

Like every scoped table, each key starts with ``tenant_id`` then ``user_id``:

    checkpoints         PK (tenant_id, user_id, session_id, checkpoint_ns, checkpoint_id)
    checkpoint_writes   PK (tenant_id, user_id, session_id, checkpoint_ns, checkpoint_id,
                            task_id, idx)
    store_items         PK (tenant_id, user_id, namespace, key)

A LangGraph thread is a session of the user: its id is ``session_id`` (so purging an expired
session takes its checkpoints too). A store ``namespace`` is held as its JSON array
text (one-to-one with the tuple, so equality is exact) plus its ``depth``; prefix and suffix
rules compare single labels by equality (``json_extract`` / ``->>``), values bound, never
``LIKE``. On PostgreSQL the id and namespace texts sort byte-wise (``COLLATE "C"``), as in
Python. Store embeddings are packed float32 (``embeddings``, one vector per name in
``embedding_fields``): they have the store's own dimension, searched exactly per user.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB

from ._types import UTCDateTime

__all__ = ["GraphTables", "build_graph_tables", "create_graph_tables"]


@dataclass(frozen=True)
class GraphTables:
    checkpoints: Table
    writes: Table
    items: Table

    @property
    def all(self) -> tuple[Table, ...]:
        return (self.checkpoints, self.writes, self.items)


def _ids(*names: str) -> list[Column[str]]:
    return [Column(name, String(255), nullable=False) for name in names]


def _sorted_text(name: str, *, nullable: bool = False) -> Column[str]:
    """Text that orders by code point on both databases (SQLite's default is binary)."""
    return Column(name, Text().with_variant(Text(collation="C"), "postgresql"), nullable=nullable)


def _json() -> JSON:
    return JSON().with_variant(JSONB(), "postgresql")


def build_graph_tables(md: MetaData, prefix: str) -> GraphTables:
    checkpoints, writes = _checkpoint_tables(md, prefix)
    return GraphTables(checkpoints, writes, _items_table(md, prefix))


_CHECKPOINT_KEY = ("tenant_id", "user_id", "session_id", "checkpoint_ns", "checkpoint_id")


def _checkpoint_key() -> list[Column[str]]:
    """The columns that name one checkpoint (``_CHECKPOINT_KEY``)."""
    return [
        *_ids("tenant_id", "user_id", "session_id"),
        _sorted_text("checkpoint_ns"),
        _sorted_text("checkpoint_id"),
    ]


def _checkpoint_tables(md: MetaData, p: str) -> tuple[Table, Table]:
    """LangGraph's checkpoints and their pending writes."""
    checkpoints = Table(
        f"{p}checkpoints",
        md,
        *_checkpoint_key(),
        _sorted_text("parent_checkpoint_id", nullable=True),
        Column("type", Text, nullable=False),
        Column("checkpoint", LargeBinary, nullable=False),
        Column("metadata", _json(), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint(*_CHECKPOINT_KEY, name=f"{p}checkpoints_pkey"),
    )
    writes = Table(
        f"{p}checkpoint_writes",
        md,
        *_checkpoint_key(),
        _sorted_text("task_id"),
        Column("idx", Integer, nullable=False),
        Column("channel", Text, nullable=False),
        Column("type", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        _sorted_text("task_path"),
        PrimaryKeyConstraint(*_CHECKPOINT_KEY, "task_id", "idx", name=f"{p}checkpoint_writes_pkey"),
    )
    return checkpoints, writes


def _items_table(md: MetaData, p: str) -> Table:
    """LangGraph's store items, with an index on the most recently updated."""
    items = Table(
        f"{p}store_items",
        md,
        *_ids("tenant_id", "user_id"),
        _sorted_text("namespace"),
        _sorted_text("key"),
        Column("depth", Integer, nullable=False),
        Column("value", _json(), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=True),
        Column("ttl_minutes", Float, nullable=True),
        Column("embedding_fields", JSON, nullable=True),
        Column("embeddings", LargeBinary, nullable=True),
        PrimaryKeyConstraint(
            "tenant_id", "user_id", "namespace", "key", name=f"{p}store_items_pkey"
        ),
    )
    Index(f"{p}store_items_recent", items.c.tenant_id, items.c.user_id, items.c.updated_at)
    return items


def create_graph_tables(conn: Connection, graph: GraphTables) -> list[Table]:
    """Create the graph tables that do not exist yet; returns those it created."""
    made = []
    for table in graph.all:
        if not inspect(conn).has_table(table.name, schema=table.schema):
            table.create(conn)
            made.append(table)
    return made
