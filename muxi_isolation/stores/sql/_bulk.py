"""PostgreSQL: one user's batch of memories upserted as one short statement over arrays.

SQLAlchemy's multi-row ``VALUES`` sends 8 parameters a row. psycopg parses that statement
(8,000 placeholders for 1,000 rows) again on every call, its query cache skipping long
statements, and dumps every parameter apart: measured, most of a bulk load's client time.
Here each column is one array parameter (the vectors one binary ``vector[]`` in pgvector's
own wire format), the statement is short (parsed once), and the server unnests the arrays.
The scope's columns are single parameters: every row of the batch is the caller's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection

from ...records import Memory
from ...scope import Scope
from ._schema import Tables
from ._types import to_wire

__all__ = ["VectorArray", "register", "upsert"]

_OID = "muxi_vector_oid"  # per pooled connection: pgvector's type oid, read once


class VectorArray:
    """A ``vector[]`` parameter in PostgreSQL's binary array format."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


@cache
def _dumper() -> type[Any]:
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorArrayDumper(Dumper):
        format = Format.BINARY  # no oid: the statement casts it

        def dump(self, obj: VectorArray) -> bytes:
            return obj.data

    return VectorArrayDumper


def register(dbapi_connection: Any, _record: Any = None) -> None:
    """A "connect" listener, beside ``register_vector_wire``."""
    connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    connection.adapters.register_dumper(VectorArray, _dumper())


def _vectors(oid: int, vectors: Sequence[Sequence[float] | None]) -> VectorArray:
    nulls = any(v is None for v in vectors)
    parts = [struct.pack(">iiiii", 1, int(nulls), oid, len(vectors), 1)]
    for vector in vectors:
        if vector is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            data = to_wire(vector).data
            parts.append(struct.pack(">i", len(data)) + data)
    return VectorArray(b"".join(parts))


@cache
def _statement(table: str, half: bool) -> str:
    embedding = "r.embedding::halfvec" if half else "r.embedding"
    """Only the quoted table name is spelled in; every value is a parameter."""
    changing = ("session_id", "content", "metadata", "embedding", "created_at")
    return (
        f"INSERT INTO {table} "  # noqa: S608
        "(tenant_id, user_id, id, session_id, content, metadata, embedding, created_at) "
        f"SELECT %(tenant_id)s, %(user_id)s, r.id, %(session_id)s, r.content, r.metadata::jsonb, "
        f"{embedding}, r.created_at FROM unnest(%(ids)s::text[], %(contents)s::text[], "
        "%(metadata)s::text[], %(embeddings)s::vector[], %(created)s::timestamptz[]) "
        "AS r(id, content, metadata, embedding, created_at) "
        "ON CONFLICT (tenant_id, user_id, id) DO UPDATE SET "
        + ", ".join(f"{name} = EXCLUDED.{name}" for name in changing)
    )


def upsert(
    conn: Connection, tables: Tables, scope: Scope, memories: Sequence[Memory], now: datetime
) -> None:
    """Upsert ``memories`` (ids unique) for ``scope``, in the caller's transaction."""
    info = conn.connection.info
    oid = info.get(_OID)
    if oid is None:
        oid = info[_OID] = int(conn.exec_driver_sql("SELECT 'vector'::regtype::oid").scalar_one())
    created = tables.memories.c.created_at.type.bind_processor(conn.dialect)
    stamps = [m.created_at or now for m in memories]
    params = {
        "tenant_id": scope.tenant_id,  # named as Citus reads an INSERT's tenant
        "user_id": scope.user_id,
        "session_id": scope.session_id,
        "ids": [m.id for m in memories],
        "contents": [m.content for m in memories],
        "metadata": [json.dumps(m.metadata) for m in memories],
        "embeddings": _vectors(oid, [m.embedding for m in memories]),
        "created": [created(s) for s in stamps] if created else stamps,
    }
    table = conn.dialect.identifier_preparer.format_table(tables.memories)
    conn.exec_driver_sql(_statement(table, tables.precision == "half"), params)
