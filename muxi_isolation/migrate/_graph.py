"""Agent-graph data in exports: LangGraph checkpoints (with their pending writes) and
store items, registered as an export section so ``export-user`` and its import carry them.

Framework-neutral: the records are the storage's own (serialized blobs travel as base64,
namespaces as lists, times as ISO 8601, store embeddings as they are). A checkpoint's
thread is one of the user's sessions, exported with the sessions. Restoring is an upsert,
and a record already there unchanged writes nothing. Store items whose TTL has lapsed are
not exported (they are gone for the app already).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from ..errors import UnreadableSource
from ..scope import Scope
from ..stores.base import Backend, Counts
from ..stores.graph import CheckpointQuery, CheckpointRecord, ItemQuery, StoreItem, WriteRecord
from ._codec import iso, parse_time
from ._export import Section, register_section

__all__ = ["GRAPH_SECTION"]

CHECKPOINT = "checkpoint"
STORE_ITEM = "store_item"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise UnreadableSource(f"field {field!r} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnreadableSource(f"field {field!r} is not base64") from exc


def _checkpoint_json(r: CheckpointRecord) -> dict[str, Any]:
    return {
        "type": CHECKPOINT,
        "thread_id": r.thread_id,
        "checkpoint_ns": r.checkpoint_ns,
        "checkpoint_id": r.checkpoint_id,
        "parent_id": r.parent_id,
        "serde_type": r.type,
        "checkpoint": _b64(r.checkpoint),
        "metadata": r.metadata,
        "created_at": iso(r.created_at),
        "writes": [
            {
                "task_id": w.task_id,
                "idx": w.idx,
                "channel": w.channel,
                "serde_type": w.type,
                "value": _b64(w.value),
                "task_path": w.task_path,
            }
            for w in sorted(r.writes, key=lambda w: (w.task_id, w.idx))
        ],
    }


def _checkpoint_from_json(data: Mapping[str, Any]) -> CheckpointRecord:
    try:
        thread, ns, cid = data["thread_id"], data["checkpoint_ns"], data["checkpoint_id"]
        writes = tuple(
            WriteRecord(
                thread,
                ns,
                cid,
                str(w["task_id"]),
                int(w["idx"]),
                str(w["channel"]),
                str(w["serde_type"]),
                _unb64(w["value"], "value"),
                str(w.get("task_path", "")),
            )
            for w in data.get("writes", [])
        )
        return CheckpointRecord(
            str(thread),
            str(ns),
            str(cid),
            data.get("parent_id"),
            str(data["serde_type"]),
            _unb64(data["checkpoint"], "checkpoint"),
            dict(data.get("metadata") or {}),
            parse_time(data.get("created_at"), "created_at"),
            None,
            writes,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnreadableSource):
            raise
        raise UnreadableSource(f"not a checkpoint record: {exc!r}") from exc


def _item_json(item: StoreItem) -> dict[str, Any]:
    return {
        "type": STORE_ITEM,
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "expires_at": iso(item.expires_at),
        "ttl": item.ttl,
        "embeddings": item.embeddings,
    }


def _item_from_json(data: Mapping[str, Any]) -> StoreItem:
    try:
        return StoreItem(
            tuple(str(x) for x in data["namespace"]),
            str(data["key"]),
            dict(data["value"]),
            parse_time(data.get("created_at"), "created_at"),
            parse_time(data.get("updated_at"), "updated_at"),
            parse_time(data.get("expires_at"), "expires_at"),
            data.get("ttl"),
            data.get("embeddings"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnreadableSource):
            raise
        raise UnreadableSource(f"not a store item record: {exc!r}") from exc


def _where(r: CheckpointRecord) -> tuple[str, str, str]:
    return (r.thread_id, r.checkpoint_ns, r.checkpoint_id)


def _items_query() -> ItemQuery:
    return ItemQuery(prefix=(), vectors=True)


def _export(backend: Backend, user: Scope) -> Iterator[dict[str, Any]]:
    checkpoints = backend.get_checkpoints(user, CheckpointQuery())
    for record in sorted(checkpoints, key=_where):
        yield _checkpoint_json(record)
    items = backend.search_items(user, _items_query(), now=datetime.now(timezone.utc))
    for item in sorted(items, key=lambda i: (i.namespace, i.key)):
        yield _item_json(item)


async def _aexport(backend: Backend, user: Scope) -> AsyncIterator[dict[str, Any]]:
    checkpoints = await backend.aget_checkpoints(user, CheckpointQuery())
    for record in sorted(checkpoints, key=_where):
        yield _checkpoint_json(record)
    items = await backend.asearch_items(user, _items_query(), now=datetime.now(timezone.utc))
    for item in sorted(items, key=lambda i: (i.namespace, i.key)):
        yield _item_json(item)


def _restore(backend: Backend, user: Scope, data: dict[str, Any], dry_run: bool) -> Counts:
    if data.get("type") == CHECKPOINT:
        record = _checkpoint_from_json(data)
        query = CheckpointQuery(record.thread_id, record.checkpoint_ns, record.checkpoint_id)
        found = backend.get_checkpoints(user, query)
        if found and _checkpoint_json(found[0]) == _checkpoint_json(record):
            return {}
        if not dry_run:
            backend.put_checkpoint(user, record)
            backend.put_checkpoint_writes(user, list(record.writes), replace=True)
        return {"checkpoints": 1, "checkpoint_writes": len(record.writes)}
    item = _item_from_json(data)
    now = datetime.now(timezone.utc)
    near = ItemQuery(prefix=item.namespace, vectors=True)  # get_items leaves vectors out
    same = [
        i
        for i in backend.search_items(user, near, now=now)
        if (i.namespace, i.key) == (item.namespace, item.key)
    ]
    if same and _item_json(same[0]) == _item_json(item):
        return {}
    if not dry_run:
        backend.put_items(user, [item], [])
    return {"store_items": 1}


def _validate(data: dict[str, Any]) -> None:
    (_checkpoint_from_json if data.get("type") == CHECKPOINT else _item_from_json)(data)


GRAPH_SECTION = Section((CHECKPOINT, STORE_ITEM), _export, _aexport, _restore, _validate)
register_section(GRAPH_SECTION)
