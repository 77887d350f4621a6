"""Column types that behave the same on SQLite and PostgreSQL.

Timestamps always come back timezone-aware in UTC (SQLite would drop the zone). Embeddings
are pgvector ``VECTOR(n)`` on PostgreSQL and packed float32 on SQLite: the same precision
on both.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from datetime import datetime, timezone
from operator import mul
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, LargeBinary, TypeDecorator, TypeEngine

__all__ = ["Embedding", "UTCDateTime", "cosine_similarity", "pack", "unpack"]


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMPTZ`` on PostgreSQL; a UTC text timestamp on SQLite. Naive input is UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Embedding(TypeDecorator[list[float]]):
    """A vector column: ``VECTOR(dimension)`` (or untyped ``VECTOR``) on PostgreSQL."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dimension: int | None = None) -> None:
        super().__init__()
        self.dimension = dimension

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector  # type: ignore[import-untyped]

            return dialect.type_descriptor(Vector(self.dimension))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return [float(x) for x in value]
        return pack(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return unpack(bytes(value))
        return [float(x) for x in value]


def pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def unpack(blob: bytes) -> list[float]:
    return array("f", blob).tolist()


def cosine_similarity(query: Sequence[float], query_norm: float, vector: Sequence[float]) -> float:
    """Cosine similarity with a precomputed query norm; a zero vector scores 0."""
    if len(vector) != len(query):
        raise ValueError(f"embedding has {len(vector)} dimensions, the query {len(query)}")
    dot = sum(map(mul, query, vector))
    norm = math.sqrt(sum(map(mul, vector, vector)))
    return dot / (query_norm * norm) if query_norm and norm else 0.0
