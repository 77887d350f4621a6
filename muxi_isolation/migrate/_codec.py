"""Records as JSON objects and back: the shape of every line of an export.

Times are ISO 8601 in UTC to the microsecond (``2026-01-08T10:00:00.000001+00:00``), so a
round trip loses nothing; embeddings are lists of numbers. Reading checks each field's type
and says which one is wrong, so a damaged file is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .._json_shapes import message_fields
from ..errors import UnreadableSource
from ..records import Memory, Message, SessionRecord
from ..scope import Scope, canonical_id

__all__ = [
    "iso",
    "memory_from_json",
    "memory_json",
    "message_from_json",
    "message_json",
    "parse_time",
    "session_from_json",
    "session_json",
]


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnreadableSource(f"{field} must be an ISO 8601 time, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UnreadableSource(f"{field} is not an ISO 8601 time: {value!r}") from exc
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _need(data: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    if field not in data:
        raise UnreadableSource(f"missing field {field!r}")
    value = data[field]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise UnreadableSource(f"field {field!r} has the wrong type ({type(value).__name__})")
    return value


def _id(data: Mapping[str, Any], field: str) -> str:
    """A session id as stored: already in canonical form (else the file was altered)."""
    value: str = _need(data, field, str)
    if canonical_id(value, field) != value:
        raise UnreadableSource(f"field {field!r} is not a canonical id")
    return value


def _time(data: Mapping[str, Any], field: str) -> datetime:
    moment = parse_time(data.get(field), field)
    if moment is None:
        raise UnreadableSource(f"missing field {field!r}")
    return moment


def session_json(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "created_at": iso(record.created_at),
        "last_active_at": iso(record.last_active_at),
        "expires_at": iso(record.expires_at),
    }


def session_from_json(data: Mapping[str, Any], user: Scope) -> SessionRecord:
    return SessionRecord(
        _id(data, "id"),
        user.user(),
        _time(data, "created_at"),
        _time(data, "last_active_at"),
        _time(data, "expires_at"),
    )


def message_json(message: Message) -> dict[str, Any]:
    assert message.scope is not None, "exported messages are stored ones"
    return {"session_id": message.scope.session_id, **message_fields(message, iso)}


def message_from_json(data: Mapping[str, Any]) -> tuple[str, Message]:
    """The session id and the message (unstamped, ``seq`` kept)."""
    if "content" not in data:
        raise UnreadableSource("missing field 'content'")
    message = Message(
        _need(data, "role", str),
        data["content"],
        dict(_need(data, "metadata", dict)),
        list(_need(data, "tool_calls", list)),
        _need(data, "status", str),
        _time(data, "created_at"),
        _need(data, "seq", int),
    )
    return _id(data, "session_id"), message


def memory_json(memory: Memory) -> dict[str, Any]:
    return {
        "id": memory.id,
        "session_id": None if memory.scope is None else memory.scope.session_id,
        "content": memory.content,
        "metadata": memory.metadata,
        "embedding": memory.embedding,
        "created_at": iso(memory.created_at),
    }


def memory_from_json(data: Mapping[str, Any]) -> tuple[str | None, Memory]:
    """Where the memory was made (a session id or ``None``) and the memory (unstamped)."""
    session = None if data.get("session_id") is None else _id(data, "session_id")
    raw = data.get("embedding")
    embedding: list[float] | None = None
    if raw is not None:
        if not isinstance(raw, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw
        ):
            raise UnreadableSource("field 'embedding' must be a list of numbers or null")
        embedding = [float(x) for x in raw]
    memory = Memory(
        _need(data, "id", str),
        _need(data, "content", str),
        dict(_need(data, "metadata", dict)),
        embedding,
        _time(data, "created_at"),
    )
    return session, memory
