"""The SDK facade, shaped like the seed's usage:

    iso = Isolation.from_config("muxi.yaml")
    session = iso.create_session(user_id="tenant_a:user_1")
    iso.messages(session.id, user_id="tenant_a:user_1").add("user", "Hello")
    iso.history(session.id, user_id="tenant_a:user_1")
    iso.memories(user_id="tenant_a:user_1").add("likes Python")

``user_id`` is the ``X-Muxi-User-Id`` form (``tenant:user``; ``None`` is user ``"0"``).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .records import Memory, Message, SessionRecord
from .scope import Scope
from .sessions import Clock, SessionManager, utc_now
from .stores import Backend, open_backend, open_configured_backend
from .stores.base import FilterSpec, Scored

__all__ = ["Isolation", "SessionMessages", "UserMemories"]

Embedder = Callable[[str], Sequence[float]]


class SessionMessages:
    """One session's messages for one user. Every write checks the session is active."""

    def __init__(self, backend: Backend, sessions: SessionManager, scope: Scope) -> None:
        self.backend, self.sessions, self.scope = backend, sessions, scope

    def add(self, role: str, content: Any, **metadata: Any) -> Message:
        return self.add_messages([Message(role, content, metadata)])[0]

    def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        return self.sessions.append(self.scope, messages)

    def get(self, *, last: int | None = None) -> list[Message]:
        return self.backend.get_messages(self.scope, last=last)

    def clear(self) -> int:
        return self.backend.delete_messages(self.scope)


class UserMemories:
    """One user's persistent memory. Outlives every session."""

    def __init__(self, backend: Backend, scope: Scope, embed: Embedder | None = None) -> None:
        self.backend, self.scope, self.embed = backend, scope, embed

    def add(
        self,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
        id: str | None = None,
    ) -> str:
        if embedding is None and self.embed is not None:
            embedding = self.embed(content)
        memory = Memory(
            id or str(uuid.uuid4()),
            content,
            dict(metadata or {}),
            None if embedding is None else [float(x) for x in embedding],
        )
        return self.backend.upsert_memories(self.scope, [memory])[0]

    def search(
        self, query: str | Sequence[float], k: int = 4, *, filter: FilterSpec = None
    ) -> list[Scored]:
        if isinstance(query, str):
            if self.embed is None:
                raise ValueError("searching by text needs an embed function")
            query = self.embed(query)
        return self.backend.search_memories(self.scope, query, k, filter=filter)

    def list(self, *, filter: FilterSpec = None, limit: int | None = None) -> builtins.list[Memory]:
        return self.backend.list_memories(self.scope, filter=filter, limit=limit)

    def get(self, ids: Sequence[str]) -> builtins.list[Memory]:
        return self.backend.get_memories(self.scope, ids)

    def delete(self, ids: Sequence[str] | None = None, *, filter: FilterSpec = None) -> int:
        return self.backend.delete_memories(self.scope, ids=ids, filter=filter)


class Isolation:
    """Sessions, histories and memories for many users over one backend."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        session_timeout: float = 3600,
        clock: Clock = utc_now,
        embed: Embedder | None = None,
        config: Config | None = None,
    ) -> None:
        self.config = config or Config()
        self.backend = backend if backend is not None else open_backend("memory://")
        self.sessions = SessionManager(self.backend, timeout=session_timeout, clock=clock)
        self.embed = embed

    @classmethod
    def from_config(
        cls,
        source: Config | str | Path | Mapping[str, Any] | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
        embed: Embedder | None = None,
    ) -> Isolation:
        """Open the backend the config names (SQLite file by default)."""
        config = source if isinstance(source, Config) else load_config(source, secrets)
        return cls(
            open_configured_backend(config),
            session_timeout=config.memory.session_timeout,
            clock=clock,
            embed=embed,
            config=config,
        )

    def scope(self, user_id: str | None = None, session_id: str | None = None) -> Scope:
        return Scope.parse(user_id, session_id)

    def create_session(self, user_id: str | None = None) -> SessionRecord:
        return self.sessions.create(Scope.parse(user_id))

    def get_session(self, session_id: str, user_id: str | None = None) -> SessionRecord:
        return self.sessions.get(Scope.parse(user_id), session_id)

    def list_sessions(self, user_id: str | None = None) -> list[SessionRecord]:
        return self.sessions.list(Scope.parse(user_id))

    def messages(self, session_id: str, user_id: str | None = None) -> SessionMessages:
        """The session's message store; ``SessionNotFound`` if it is not this user's."""
        record = self.sessions.get(Scope.parse(user_id), session_id)
        return SessionMessages(self.backend, self.sessions, record.scope.with_session(record.id))

    def history(self, session_id: str, user_id: str | None = None) -> list[Message]:
        """A session's messages, oldest first (readable after expiry, until purged)."""
        return self.messages(session_id, user_id).get()

    def memories(self, user_id: str | None = None) -> UserMemories:
        return UserMemories(self.backend, Scope.parse(user_id), self.embed)

    def forget_user(self, user_id: str) -> dict[str, int]:
        return self.backend.forget_user(Scope.parse(user_id))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Isolation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
