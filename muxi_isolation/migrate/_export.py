"""Export one user to JSON Lines: every session, message and memory, nothing lost.

One JSON object per line, each with a ``type`` and the format version ``v``:

    {"type": "muxi-isolation-export", "v": 1, "tenant_id": ..., "user_id": ..., "exported_at": ...}
    {"type": "session", "v": 1, "id": ..., "created_at": ..., "last_active_at": ...,
     "expires_at": ...}
    {"type": "message", "v": 1, "session_id": ..., "seq": ..., "role": ..., "content": ...,
     "metadata": ..., "tool_calls": ..., "status": ..., "created_at": ...}
    {"type": "memory", "v": 1, "id": ..., "session_id": ..., "content": ..., "metadata": ...,
     "embedding": [...], "created_at": ...}
    ... records of registered sections ...
    {"type": "end", "v": 1, "counts": {"session": n, "message": n, "memory": n, ...}}

Messages come grouped by session, oldest first, with their ``seq``; sessions that hold
messages but no session record are kept as such. The ``end`` line carries the counts, so a
truncated file is recognised and refused on import. ``muxi-isolation import muxi-export``
(``sources.MuxiExport``) reads it back into any backend.

Extension point: other per-user data joins the export by ``register_section(Section(...))``:
its ``export``/``aexport`` yield records with their own ``type``, its ``validate`` checks one
and its ``restore`` writes one back on import. LangGraph checkpoints and store items come
this way (``_graph``: ``checkpoint`` and ``store_item`` records).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from .. import policy
from ..audit import OK
from ..errors import InvalidInput
from ..records import SessionRecord
from ..scope import Scope
from ..stores.base import Backend, Counts
from ._codec import iso, memory_json, message_json, session_json

__all__ = [
    "CORE_TYPES",
    "END",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "SECTIONS",
    "Section",
    "aexport_document",
    "aexport_user",
    "aiter_export",
    "dumps",
    "export_document",
    "export_user",
    "iter_export",
    "register_section",
]

EXPORT_FORMAT = "muxi-isolation-export"
EXPORT_VERSION = 1
END = "end"
CORE_TYPES = ("session", "message", "memory")
PAGE = 1000


@dataclass(frozen=True)
class Section:
    """Per-user data beyond sessions, messages and memories, in exports and their imports.

    ``types``: the record types it owns. ``export(backend, user)`` / ``aexport``: its
    records for one user (dicts with a ``type``). ``restore(backend, user, record,
    dry_run)``: write one record back for ``user``, idempotently (an equal record already
    there writes nothing); returns counts by kind of what it wrote (or would write).
    ``validate(record)``: raise ``UnreadableSource`` for a damaged record, so an import
    refuses the file before writing anything.
    """

    types: tuple[str, ...]
    export: Callable[[Backend, Scope], Iterable[dict[str, Any]]]
    aexport: Callable[[Backend, Scope], AsyncIterator[dict[str, Any]]]
    restore: Callable[[Backend, Scope, dict[str, Any], bool], Counts]
    validate: Callable[[dict[str, Any]], None] = lambda record: None


SECTIONS: list[Section] = []


def register_section(section: Section) -> None:
    """Add a section to every export and import from now on (types must be new)."""
    taken = {t for s in SECTIONS for t in s.types} | {*CORE_TYPES, EXPORT_FORMAT, END}
    clash = taken & set(section.types)
    if clash:
        raise InvalidInput(f"export record types already taken: {sorted(clash)}", field="types")
    SECTIONS.append(section)


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _header(user: Scope, now: datetime | None) -> dict[str, Any]:
    return {
        "type": EXPORT_FORMAT,
        "v": EXPORT_VERSION,
        "tenant_id": user.tenant_id,
        "user_id": user.user_id,
        "exported_at": iso(now or datetime.now(timezone.utc)),
    }


def _line(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "v": EXPORT_VERSION, **data}


def iter_export(
    backend: Backend, user: Scope, *, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The export's records, one dict per line, read page by page."""
    user = policy.require_scope(user).user()
    backend.audit.record("export", OK, user)  # an admin act: audited
    counts: Counter[str] = Counter()
    yield _header(user, now)
    records = backend.list_sessions(user)
    for record in records:
        counts["session"] += 1
        yield _line("session", session_json(record))
    for sid in _session_ids(records, backend.list_message_sessions(user)):
        offset = 0
        while page := backend.get_messages(user.with_session(sid), limit=PAGE, offset=offset):
            offset += len(page)
            for message in page:
                counts["message"] += 1
                yield _line("message", message_json(message))
    offset = 0
    while memories := backend.list_memories(user, limit=PAGE, offset=offset):
        offset += len(memories)
        for memory in memories:
            counts["memory"] += 1
            yield _line("memory", memory_json(memory))
    for section in SECTIONS:
        for extra in section.export(backend, user):
            counts[str(extra["type"])] += 1
            yield {**extra, "v": EXPORT_VERSION}
    yield _line(END, {"counts": dict(counts)})


async def aiter_export(
    backend: Backend, user: Scope, *, now: datetime | None = None
) -> AsyncIterator[dict[str, Any]]:
    user = policy.require_scope(user).user()
    await backend.audit.arecord("export", OK, user)
    counts: Counter[str] = Counter()
    yield _header(user, now)
    records = await backend.alist_sessions(user)
    for record in records:
        counts["session"] += 1
        yield _line("session", session_json(record))
    for sid in _session_ids(records, await backend.alist_message_sessions(user)):
        offset = 0
        while page := await backend.aget_messages(
            user.with_session(sid), limit=PAGE, offset=offset
        ):
            offset += len(page)
            for message in page:
                counts["message"] += 1
                yield _line("message", message_json(message))
    offset = 0
    while memories := await backend.alist_memories(user, limit=PAGE, offset=offset):
        offset += len(memories)
        for memory in memories:
            counts["memory"] += 1
            yield _line("memory", memory_json(memory))
    for section in SECTIONS:
        async for extra in section.aexport(backend, user):
            counts[str(extra["type"])] += 1
            yield {**extra, "v": EXPORT_VERSION}
    yield _line(END, {"counts": dict(counts)})


def _session_ids(records: list[SessionRecord], with_messages: list[str]) -> list[str]:
    """Sessions in record order, then those holding messages without a record."""
    known = [r.id for r in records]
    return known + sorted(set(with_messages) - set(known))


def export_user(
    backend: Backend, user: Scope, out: TextIO, *, now: datetime | None = None
) -> dict[str, int]:
    """Write the user's export to ``out`` (a text stream), line by line; the counts."""
    last: dict[str, Any] = {}
    for record in iter_export(backend, user, now=now):
        out.write(dumps(record) + "\n")
        last = record
    return dict(last["counts"])


async def aexport_user(
    backend: Backend, user: Scope, out: TextIO, *, now: datetime | None = None
) -> dict[str, int]:
    last: dict[str, Any] = {}
    async for record in aiter_export(backend, user, now=now):
        out.write(dumps(record) + "\n")
        last = record
    return dict(last["counts"])


def _document(records: Iterable[dict[str, Any]], header: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"sessions": [], "memories": []}
    sessions: dict[str, dict[str, Any]] = {}
    for record in records:
        data = {k: v for k, v in record.items() if k not in ("type", "v")}
        kind = record["type"]
        if kind == EXPORT_FORMAT:
            doc = {"format": kind, "version": record["v"], **data, "user_id": header, **doc}
        elif kind == "session":
            sessions[data["id"]] = {**data, "user_id": header, "messages": []}
            doc["sessions"].append(sessions[data["id"]])
        elif kind == "message":
            sid = data.pop("session_id")
            if sid not in sessions:  # messages without a session record
                sessions[sid] = {"id": sid, "user_id": header, "record": False, "messages": []}
                doc["sessions"].append(sessions[sid])
            sessions[sid]["messages"].append(data)
        elif kind == "memory":
            doc["memories"].append(data)
        elif kind == END:
            doc["counts"] = data["counts"]
        else:
            doc.setdefault(f"{kind}s", []).append(data)
    return doc


def export_document(
    backend: Backend, user: Scope, *, now: datetime | None = None
) -> dict[str, Any]:
    """The same export as one JSON document, messages nested in their sessions (HTTP)."""
    user = policy.require_scope(user).user()
    return _document(iter_export(backend, user, now=now), user.header)


async def aexport_document(
    backend: Backend, user: Scope, *, now: datetime | None = None
) -> dict[str, Any]:
    user = policy.require_scope(user).user()
    return _document([r async for r in aiter_export(backend, user, now=now)], user.header)
