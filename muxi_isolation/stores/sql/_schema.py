"""The tables, built per backend from a validated name prefix, and their versioning.

Every table carries ``tenant_id`` and ``user_id`` as separate columns, and every primary
key starts with ``tenant_id`` then ``user_id``: one user's rows are one contiguous range of
each key, whatever the table's size, and the schema can be distributed by ``tenant_id``
(Citus) with every statement routed to one shard.

    sessions          PK (tenant_id, user_id, id); (tenant_id, expires_at) for the purge
    messages          PK (tenant_id, user_id, session_id, seq)   "this session's last N"
    message_counters  PK (tenant_id, user_id, session_id)        the next seq, never reused
    memories          PK (tenant_id, user_id, id); (tenant_id, user_id, created_at, id);
                      (tenant_id, user_id) WHERE embedding IS NOT NULL; PostgreSQL: an
                      HNSW index per user above ``ann_threshold`` (``_ann_index``)
    checkpoints, checkpoint_writes, store_items
                      agent-graph storage (LangGraph), keys as above (``_graph_schema``)
    memories' text    PostgreSQL: GIN on to_tsvector(text_config, content); SQLite: an FTS5
                      table over the memories, kept by triggers (``_text``)
    memory_versions   SQLite only: PK (tenant_id, user_id), a random version per user set by
                      triggers on the memories (``_vector_cache``)
    schema_version    one row: the version of this layout
    receipts          PK (tenant_id, user_id, key): idempotent requests' answers
    scope_key         PostgreSQL only, the owner's alone: row 0 binds a scope to its
                      transaction, rows 1.. sign the row-level-security scope (the newest
                      signs; older ones verify until a rotation drops them; see ``_rls``)

Upgrades: ``SCHEMA_VERSION`` is bumped with each layout change and ``UPGRADES[n]`` moves a
database from version ``n`` to ``n + 1``; ``install`` runs the missing steps in order, in
one transaction, under an advisory lock on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from ...errors import ConfigError, StorageError
from . import _rls
from ._graph_schema import GraphTables, build_graph_tables, create_graph_tables
from ._types import Embedding, Precision, UTCDateTime

__all__ = [
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "HNSW_MAX_DIMENSION",
    "HNSW_MAX_HALF_DIMENSION",
    "SCHEMA_VERSION",
    "UPGRADES",
    "Tables",
    "build_tables",
    "check_name",
    "create_hnsw",
    "hnsw_name",
    "install",
    "replace_schema",
    "with_dimension",
]

SCHEMA_VERSION = 8
COMPONENT = "muxi-isolation"
HNSW_MAX_DIMENSION = 2000  # pgvector's limit for an HNSW index on VECTOR
HNSW_MAX_HALF_DIMENSION = 4000  # ... and on HALFVEC
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128  # twice pgvector's default: measured recall on hard clusters
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_ADVISORY_KEY = 0x6D757869  # "muxi"


def _sign_the_scope(conn: Connection, tables: Tables) -> None:
    """1 -> 2: row-level security trusts only a signed scope (``_rls``)."""
    if conn.dialect.name != "postgresql":
        return
    for statement in _rls.create_scope_key(conn, tables) + _rls.resign_policies(conn, tables):
        conn.execute(text(statement))


def _maintenance(conn: Connection, tables: Tables) -> None:
    """2 -> 3: the expired-session purge finds tenants (``_rls``) and sessions by expiry."""
    name = f"{tables.prefix}sessions_by_expiry"
    expiry = next(i for i in tables.sessions.indexes if i.name == name)
    expiry.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        for statement in _rls.list_policies(conn, tables):
            conn.execute(text(statement))


def _graph(conn: Connection, tables: Tables) -> None:
    """3 -> 4: the agent-graph tables, with row-level security like the others."""
    assert tables.graph is not None
    made = create_graph_tables(conn, tables.graph)
    if conn.dialect.name == "postgresql" and made:
        for statement in _rls.policies(conn, tables, only=made):
            conn.execute(text(statement))


def _bind_the_scope(conn: Connection, tables: Tables) -> None:
    """4 -> 5: the scope is opened by ``scope_enter`` and bound to its transaction (``_rls``;
    backends of an older version see nothing after this step: they fail closed), and the
    receipts of idempotent requests get their table."""
    receipts = tables.receipts
    assert receipts is not None
    made = not inspect(conn).has_table(receipts.name, schema=receipts.schema)
    if made:
        receipts.create(conn)
    if conn.dialect.name != "postgresql":
        return
    statements = _rls.binding_key(conn, tables)
    statements += _rls.policies(conn, tables, only=[receipts]) if made else []
    for statement in statements:
        conn.execute(text(statement))


def _text_index(conn: Connection, tables: Tables) -> None:
    """5 -> 6: the memories' full-text index, for hybrid search (``_text``)."""
    from ._text import text_index_statements  # _text reads these tables: import late

    for statement in text_index_statements(conn, tables):
        conn.execute(text(statement))


def _vector_versions(conn: Connection, tables: Tables) -> None:
    """6 -> 7: SQLite's per-user memory versions, set by triggers, so a search may keep a
    large user's vectors in memory while they hold (``_vector_cache``)."""
    from ._vector_cache import version_statements  # it reads these tables: import late

    for statement in version_statements(conn, tables):
        conn.execute(text(statement))


def _versions_on_any_update(conn: Connection, tables: Tables) -> None:
    """7 -> 8: SQLite's version moves on an update of any column of a memory, since a
    search keeps the rows whole (``_vector_cache``)."""
    from ._vector_cache import any_update_statements  # it reads these tables: import late

    for statement in any_update_statements(conn, tables):
        conn.execute(text(statement))


UPGRADES: dict[int, Callable[[Connection, Tables], None]] = {
    1: _sign_the_scope,
    2: _maintenance,
    3: _graph,
    4: _bind_the_scope,
    5: _text_index,
    6: _vector_versions,
    7: _versions_on_any_update,
}
GRAPH_SINCE = 3  # upgrade steps before this one see the tables without the graph ones
RECEIPTS_SINCE = 4  # ... and before this one without the receipts


def check_name(value: str, what: str, *, empty: bool = False) -> str:
    """A table prefix or schema name: lower-case letters, digits and ``_``; never quoted away."""
    if empty and value == "":
        return value
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{what} must match [a-z_][a-z0-9_]* (at most 40 characters)")
    return value


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    sessions: Table
    messages: Table
    counters: Table
    memories: Table
    version: Table
    prefix: str
    dimension: int | None
    graph: GraphTables | None = None
    receipts: Table | None = None
    text_config: str = "english"  # PostgreSQL's text search config for the memories
    precision: Precision = "full"  # PostgreSQL: VECTOR, or "half": HALFVEC

    @property
    def scoped(self) -> tuple[Table, ...]:
        """The tables holding tenant data: row-level security and Citus apply to these."""
        return (self.sessions, self.messages, self.counters, self.memories, *self.optional)

    @property
    def optional(self) -> tuple[Table, ...]:
        """Tables of an optional feature (agent graphs, idempotency receipts): counted only
        when they held rows."""
        graph = () if self.graph is None else self.graph.all
        return graph + (() if self.receipts is None else (self.receipts,))

    @property
    def hnsw(self) -> bool:
        limit = HNSW_MAX_HALF_DIMENSION if self.precision == "half" else HNSW_MAX_DIMENSION
        return self.dimension is not None and self.dimension <= limit


def _ids(*names: str) -> list[Column[str]]:
    return [Column(name, String(255), nullable=False) for name in names]


def build_tables(
    prefix: str = "muxi_",
    schema: str | None = None,
    dimension: int | None = None,
    text_config: str = "english",
    precision: Precision = "full",
) -> Tables:
    check_name(prefix, "table_prefix", empty=True)
    check_name(text_config, "text_search_config")  # spelled into the index's expression
    if schema is not None:
        check_name(schema, "schema")
    if dimension is not None and (not isinstance(dimension, int) or dimension < 1):
        raise ConfigError("embedding_dimension must be a positive integer or None")
    md = MetaData(schema=schema)
    p = prefix
    sessions, messages, counters = _session_tables(md, p)
    memories = _memories_table(md, p, dimension, precision)
    version = Table(
        f"{p}schema_version",
        md,
        Column("component", String(64), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    receipts = Table(
        f"{p}receipts",
        md,
        *_ids("tenant_id", "user_id", "key"),
        Column("request", String(128), nullable=False),
        Column("response", JSON, nullable=False),
        Column("seqs", JSON, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("tenant_id", "user_id", "key", name=f"{p}receipts_pkey"),
    )
    graph = build_graph_tables(md, p)
    return Tables(
        md,
        sessions,
        messages,
        counters,
        memories,
        version,
        prefix,
        dimension,
        graph,
        receipts,
        text_config,
        precision,
    )


def _session_tables(md: MetaData, p: str) -> tuple[Table, Table, Table]:
    """Sessions, their messages, and each session's next-seq counter."""
    sessions = Table(
        f"{p}sessions",
        md,
        *_ids("tenant_id", "user_id", "id"),
        Column("created_at", UTCDateTime, nullable=False),
        Column("last_active_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("tenant_id", "user_id", "id", name=f"{p}sessions_pkey"),
    )
    Index(f"{p}sessions_by_user", sessions.c.tenant_id, sessions.c.user_id, sessions.c.created_at)
    Index(f"{p}sessions_by_expiry", sessions.c.tenant_id, sessions.c.expires_at)
    messages = Table(
        f"{p}messages",
        md,
        *_ids("tenant_id", "user_id", "session_id"),
        Column("seq", BigInteger, nullable=False),
        Column("role", Text, nullable=False),
        Column("content", JSON, nullable=False),
        Column("metadata", JSON, nullable=False),
        Column("tool_calls", JSON, nullable=False),
        Column("status", String(32), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("tenant_id", "user_id", "session_id", "seq", name=f"{p}messages_pkey"),
        sqlite_with_rowid=False,  # clustered on the key: a session's rows sit together
    )
    counters = Table(
        f"{p}message_counters",
        md,
        *_ids("tenant_id", "user_id", "session_id"),
        Column("next_seq", BigInteger, nullable=False),
        PrimaryKeyConstraint(
            "tenant_id", "user_id", "session_id", name=f"{p}message_counters_pkey"
        ),
    )
    return sessions, messages, counters


def _memories_table(md: MetaData, p: str, dimension: int | None, precision: Precision) -> Table:
    """The users' memories, with an index for listing and one for the embedded rows."""
    memories = Table(
        f"{p}memories",
        md,
        *_ids("tenant_id", "user_id"),
        Column("id", Text, nullable=False),  # callers' ids (UUIDs, hashes): no length cap
        Column("session_id", String(255), nullable=True),
        Column("content", Text, nullable=False),
        Column("metadata", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        Column("embedding", Embedding(dimension, precision), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("tenant_id", "user_id", "id", name=f"{p}memories_pkey"),
    )
    Index(
        f"{p}memories_by_user",
        memories.c.tenant_id,
        memories.c.user_id,
        memories.c.created_at,
        memories.c.id,
    )
    embedded = memories.c.embedding.is_not(None)
    Index(
        f"{p}memories_embedded",
        memories.c.tenant_id,
        memories.c.user_id,
        postgresql_where=embedded,
        sqlite_where=embedded,
    )
    return memories


def replace_schema(tables: Tables, schema: str) -> Tables:
    """The same layout, every table named with ``schema``."""
    check_name(schema, "schema")
    return build_tables(
        tables.prefix, schema, tables.dimension, tables.text_config, tables.precision
    )


def with_dimension(tables: Tables, dimension: int | None) -> Tables:
    """The same layout, the memories' vectors of ``dimension``."""
    return build_tables(
        tables.prefix, tables.metadata.schema, dimension, tables.text_config, tables.precision
    )


def read_version(conn: Connection, tables: Tables) -> int:
    """The installed layout version; 0 when the tables are not there yet."""
    if not inspect(conn).has_table(tables.version.name, schema=tables.version.schema):
        return 0
    found = conn.scalar(
        select(tables.version.c.version).where(tables.version.c.component == COMPONENT)
    )
    return int(found or 0)


def install(conn: Connection, tables: Tables, *, app_role: str | None) -> None:
    """Create or upgrade the tables (idempotent); on PostgreSQL also RLS and grants.

    ``app_role``: the non-owner role the app connects as, granted DML on the tables.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_KEY)))
    version = read_version(conn, tables)
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the database holds schema version {version}; this library knows up to "
            f"{SCHEMA_VERSION}: upgrade muxi-isolation"
        )
    if version == 0:
        _create(conn, tables, postgres)
    else:
        for step in range(version, SCHEMA_VERSION):
            UPGRADES[step](conn, _as_of(tables, step))
    if version != SCHEMA_VERSION:
        _write_version(conn, tables, fresh=version == 0)
    if postgres and app_role is not None:
        for statement in _rls.grants(conn, tables, app_role):
            conn.execute(text(statement))
    from ._audit import install as install_audit  # _audit reads these tables: import late

    install_audit(conn, tables, app_role=app_role if postgres else None)


def _as_of(tables: Tables, step: int) -> Tables:
    """The tables as upgrade ``step`` finds them: later steps' tables not there yet."""
    if step < GRAPH_SINCE:
        tables = replace(tables, graph=None)
    return tables if step >= RECEIPTS_SINCE else replace(tables, receipts=None)


def _create(conn: Connection, tables: Tables, postgres: bool) -> None:
    if postgres:
        has_vector = conn.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
        if not has_vector:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        if tables.metadata.schema is not None:
            quoted = conn.dialect.identifier_preparer.quote_schema(tables.metadata.schema)
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
    tables.metadata.create_all(conn)
    _text_index(conn, tables)
    _vector_versions(conn, tables)
    if postgres:  # no shared HNSW index: each large user gets one (``_ann_index``)
        for statement in _rls.create_scope_key(conn, tables) + _rls.policies(conn, tables):
            conn.execute(text(statement))


def hnsw_name(conn: Connection, tables: Tables) -> str:
    """The HNSW index's name, with its schema."""
    prep = conn.dialect.identifier_preparer
    index = prep.quote(f"{tables.prefix}memories_hnsw")
    return f"{prep.quote_schema(str(tables.memories.schema))}.{index}"


def create_hnsw(conn: Connection, tables: Tables) -> None:
    """The one shared HNSW index of stores made before per-user indexes (``_ann_index``):
    kept for tests and benchmarks of such stores; the library makes it no more."""
    if not tables.hnsw:
        return
    prep = conn.dialect.identifier_preparer
    name = prep.quote(f"{tables.prefix}memories_hnsw")
    ops = "halfvec_cosine_ops" if tables.precision == "half" else "vector_cosine_ops"
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON {prep.format_table(tables.memories)} "
            f"USING hnsw (embedding {ops}) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
    )


def _write_version(conn: Connection, tables: Tables, *, fresh: bool) -> None:
    now = datetime.now(timezone.utc)
    v = tables.version
    if fresh:
        conn.execute(insert(v).values(component=COMPONENT, version=SCHEMA_VERSION, updated_at=now))
    else:
        conn.execute(
            v.update()
            .where(v.c.component == COMPONENT)
            .values(version=SCHEMA_VERSION, updated_at=now)
        )
