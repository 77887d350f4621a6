"""Agent-graph rows and records: embeddings packed as float32 bytes, rows read back as
checkpoints, pending writes and store items, long lists in chunks."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import Row

from ...errors import InvalidInput
from ...scope import known_scope
from ..graph import CheckpointRecord, StoreItem, WriteRecord, decode_namespace

__all__ = [
    "chunks",
    "pack",
    "row_to_checkpoint",
    "row_to_item",
    "row_to_write",
    "unpack",
    "with_writes",
]

T = TypeVar("T")
_CHUNK = 500
_LITTLE = sys.byteorder == "little"


def pack(vectors: dict[str, list[float]]) -> tuple[list[str], bytes]:
    dims = {len(v) for v in vectors.values()}
    if len(dims) != 1:
        # put_items checked it already; kept so no caller of pack stores a ragged array
        raise InvalidInput(
            "an item's embeddings must all have the same dimension", field="embeddings"
        )
    values = array("f", [x for v in vectors.values() for x in v])
    if not _LITTLE:
        values.byteswap()
    return list(vectors), values.tobytes()


def unpack(fields: list[str] | None, data: bytes | None) -> dict[str, list[float]] | None:
    if not fields or data is None:
        return None
    values = array("f")
    values.frombytes(bytes(data))
    if not _LITTLE:
        values.byteswap()
    flat = values.tolist()
    dim = len(flat) // len(fields)
    return {f: flat[i * dim : (i + 1) * dim] for i, f in enumerate(fields)}


def chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def row_to_checkpoint(row: Row[Any]) -> CheckpointRecord:
    m = row._mapping
    return CheckpointRecord(
        m["session_id"],
        m["checkpoint_ns"],
        m["checkpoint_id"],
        m["parent_checkpoint_id"],
        m["type"],
        bytes(m["checkpoint"]),
        dict(m["metadata"] or {}),
        m["created_at"],
        known_scope(m["tenant_id"], m["user_id"]),
    )


def row_to_write(row: Row[Any]) -> WriteRecord:
    m = row._mapping
    return WriteRecord(
        m["session_id"],
        m["checkpoint_ns"],
        m["checkpoint_id"],
        m["task_id"],
        m["idx"],
        m["channel"],
        m["type"],
        bytes(m["value"]),
        m["task_path"],
        known_scope(m["tenant_id"], m["user_id"]),
    )


def row_to_item(row: Row[Any], vectors: bool) -> StoreItem:
    m = row._mapping
    return StoreItem(
        decode_namespace(m["namespace"]),
        m["key"],
        dict(m["value"]),
        m["created_at"],
        m["updated_at"],
        m["expires_at"],
        m["ttl_minutes"],
        unpack(m["embedding_fields"], m["embeddings"]) if vectors else None,
        known_scope(m["tenant_id"], m["user_id"]),
    )


def with_writes(record: CheckpointRecord, writes: list[WriteRecord]) -> CheckpointRecord:
    return replace(record, writes=tuple(writes))
