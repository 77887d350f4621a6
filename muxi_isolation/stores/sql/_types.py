"""Column types that behave the same on SQLite and PostgreSQL.

Timestamps always come back timezone-aware in UTC (SQLite would drop the zone). Embeddings
are pgvector ``VECTOR(n)`` on PostgreSQL and packed float32 on SQLite: the same precision
on both. ``embedding_precision="half"`` makes them ``HALFVEC(n)`` on PostgreSQL (float16:
half the bytes, read back rounded to float16).

On PostgreSQL, vectors travel in pgvector's binary format both ways (``vector_send`` on
the way out, a binary parameter cast to ``vector`` on the way in): formatting and parsing
384 floats as text took about 0.25 ms per vector each way, most of a bulk write's time.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache
from typing import Any, Literal

from sqlalchemy import cast, func
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import DateTime, LargeBinary, TypeDecorator, TypeEngine

from ...errors import StorageError

__all__ = [
    "PRECISIONS",
    "Embedding",
    "Precision",
    "UTCDateTime",
    "VectorWire",
    "from_wire",
    "pack",
    "register_vector_wire",
    "to_wire",
    "unpack",
]

_SWAP = sys.byteorder == "little"  # pgvector's binary format is big-endian

Precision = Literal["full", "half"]
PRECISIONS: tuple[Precision, ...] = ("full", "half")


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
            # Not the caller's input: the column holds something no write of ours stores.
            raise StorageError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Embedding(TypeDecorator[list[float]]):
    """A vector column: ``VECTOR(dimension)`` (or untyped ``VECTOR``) on PostgreSQL, or
    ``HALFVEC`` for half precision."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dimension: int | None = None, precision: Precision = "full") -> None:
        super().__init__()
        self.dimension = dimension
        self.precision = precision

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            wire = _wire_halfvec() if self.precision == "half" else _wire_vector()
            return dialect.type_descriptor(wire(self.dimension))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return to_wire(value)
        return pack(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        if value is None or isinstance(value, list):
            return value  # a list: read through vector_send, decoded already
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            return from_wire(raw) if dialect.name == "postgresql" else unpack(raw)
        if isinstance(value, str):  # pgvector's text form, where vector_send was not applied
            return array("f", [float(x) for x in value.strip("[]").split(",") if x]).tolist()
        return [float(x) for x in value]


class VectorWire:
    """A vector in pgvector's binary format, sent as a binary query parameter."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def to_wire(vector: Sequence[float]) -> VectorWire:
    values = array("f", vector)
    if _SWAP:
        values.byteswap()
    return VectorWire(struct.pack(">HH", len(values), 0) + values.tobytes())


def from_wire(data: bytes) -> list[float]:
    dimension, _ = struct.unpack_from(">HH", data)
    values = array("f")
    values.frombytes(data[4 : 4 + 4 * dimension])
    if _SWAP:
        values.byteswap()
    return values.tolist()


class _FromWire(TypeDecorator[list[float]]):
    """The result type of ``vector_send(embedding)``: bytes decoded to floats."""

    impl = LargeBinary
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        return None if value is None else from_wire(bytes(value))


@cache
def _wire_vector() -> Any:
    """pgvector's SQLAlchemy type, its values moved in binary (imported on first use)."""
    from pgvector.sqlalchemy import Vector  # type: ignore[import-untyped]

    class WireVector(Vector):  # type: ignore[misc]
        cache_ok = True

        def bind_processor(self, dialect: Dialect) -> None:
            return None  # Embedding made the VectorWire already

        def result_processor(self, dialect: Dialect, coltype: object) -> None:
            return None

        def bind_expression(self, bindvalue: BindParameter[Any]) -> ColumnElement[Any]:
            return cast(bindvalue, Vector())  # the binary parameter's type, whatever the context

        def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
            return func.vector_send(column, type_=_FromWire())

    return WireVector


@cache
def _wire_halfvec() -> Any:
    """``HALFVEC``, moved as ``VECTOR`` on the wire and cast on the server. A query's
    parameter is cast to ``halfvec`` explicitly (pgvector's implicit cast would pick it too),
    so ``<=>`` is the ``halfvec`` operator its ``halfvec_cosine_ops`` index serves."""
    from pgvector.sqlalchemy import HALFVEC, Vector

    class WireHalfVec(HALFVEC):  # type: ignore[misc]
        cache_ok = True

        def bind_processor(self, dialect: Dialect) -> None:
            return None

        def result_processor(self, dialect: Dialect, coltype: object) -> None:
            return None

        def bind_expression(self, bindvalue: BindParameter[Any]) -> ColumnElement[Any]:
            return cast(cast(bindvalue, Vector()), HALFVEC())

        def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
            return func.vector_send(cast(column, Vector()), type_=_FromWire())

    return WireHalfVec


@cache
def _wire_dumper() -> type[Any]:
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorWireDumper(Dumper):
        format = Format.BINARY  # no oid: the server takes the type from the cast

        def dump(self, obj: VectorWire) -> bytes:
            return obj.data

    return VectorWireDumper


def register_vector_wire(dbapi_connection: Any, _record: Any = None) -> None:
    """A "connect" listener: teach a new psycopg connection (sync, or SQLAlchemy's async
    adapter of one) to send ``VectorWire`` values as binary parameters."""
    connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    connection.adapters.register_dumper(VectorWire, _wire_dumper())


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)  # array("f", ...)'s bytes, twice as fast


def unpack(blob: bytes) -> list[float]:
    return array("f", blob).tolist()
