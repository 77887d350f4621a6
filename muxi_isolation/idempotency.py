"""Idempotent requests: a retry with the same key gets the first answer and writes nothing.

A client that saw a timeout or a 503 cannot know whether its write was stored. With an
idempotency key (HTTP ``Idempotency-Key``, or ``idempotency_key=`` on an append) the first
request stores a ``Receipt`` in the same transaction as its writes; a retry finds it and is
answered from it. Keys are per user: another user's key is another key. The same key sent
with another request is ``KeyReused`` (HTTP 422), never a silent replay of something else.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import KeyReused
from .records import Message, Receipt

__all__ = ["digest", "message_request", "replayed"]


def digest(request: Any) -> str:
    """A stable digest of a request (JSON with sorted keys)."""
    text = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def message_request(session_id: str | None, messages: list[Message]) -> str:
    """The digest of an append: where, and what (role, content, metadata, tool calls)."""
    shown = [[m.role, m.content, m.metadata, m.tool_calls, m.status] for m in messages]
    return digest({"session_id": session_id, "messages": shown})


def replayed(receipt: Receipt | None, request: str) -> Receipt | None:
    """The receipt to answer from, if this key was stored for this very request."""
    if receipt is None:
        return None
    if receipt.request != request:
        raise KeyReused(receipt.key)
    return receipt
