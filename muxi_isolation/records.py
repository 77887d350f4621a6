"""The neutral records every backend stores and every adapter converts to and from.

One message shape serves LangChain and LlamaIndex alike, which is what lets a history
written through one framework be read back through the other without copying.
A record's ``scope`` is ``None`` until the policy stamps it on the way into storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .scope import Scope

__all__ = ["ACTIVE", "ARCHIVED", "JSON", "Memory", "Message", "Receipt", "SessionRecord"]

JSON = Any
ACTIVE = "active"
ARCHIVED = "archived"


@dataclass(frozen=True)
class SessionRecord:
    """A conversation context, bound to exactly one (tenant, user)."""

    id: str
    scope: Scope
    created_at: datetime
    last_active_at: datetime
    expires_at: datetime

    @property
    def user_id(self) -> str:
        """The compound user id as the client sent it (``tenant_a:user_1``)."""
        return self.scope.header

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Message:
    """One chat message: role, content (text or content blocks), metadata and tool calls.

    ``seq`` orders messages strictly within a session; the store assigns it.
    """

    role: str
    content: JSON
    metadata: dict[str, JSON] = field(default_factory=dict)
    tool_calls: list[dict[str, JSON]] = field(default_factory=list)
    status: str = ACTIVE
    created_at: datetime | None = None
    seq: int | None = None
    scope: Scope | None = None


@dataclass(frozen=True)
class Memory:
    """A unit of a user's persistent memory, optionally with an embedding vector.

    Memories belong to the user, not the session: ``scope.session_id`` only records
    where a memory was made, and reads are filtered at the user level.
    """

    id: str
    content: str
    metadata: dict[str, JSON] = field(default_factory=dict)
    embedding: list[float] | None = None
    created_at: datetime | None = None
    scope: Scope | None = None


@dataclass(frozen=True)
class Receipt:
    """What an idempotent request answered, kept for its user under the request's key.

    A retry with the same ``key`` (an HTTP ``Idempotency-Key``, or the ``idempotency_key`` of
    an append) gets ``response`` back and writes nothing; ``request`` is a digest of what was
    asked, so the same key with another request is refused. Written in the same transaction
    as the request's own writes: both are stored, or neither. ``seqs``: the store fills in
    the sequence numbers the request's messages got.
    """

    key: str
    request: str
    response: dict[str, JSON]
    seqs: tuple[int, ...] = ()
    created_at: datetime | None = None
    scope: Scope | None = None
