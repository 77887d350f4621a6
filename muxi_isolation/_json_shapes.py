"""A stored message as JSON: one list of fields for the export and the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .records import Message

__all__ = ["message_fields"]


def message_fields(message: Message, when: Callable[[datetime], str | None]) -> dict[str, Any]:
    """``message``'s own fields; ``when`` writes its time (an export keeps the microseconds,
    the API shows the seed's seconds)."""
    created = message.created_at
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "metadata": message.metadata,
        "tool_calls": message.tool_calls,
        "status": message.status,
        "created_at": None if created is None else when(created),
    }
