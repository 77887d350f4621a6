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

from . import policy
from .config import Config, load_config
from .errors import InvalidInput
from .plans import Plan, step, twins
from .records import Memory, Message, SessionRecord
from .scope import Scope
from .sessions import DEFAULT_TIMEOUT, Clock, SessionManager, utc_now
from .stores import Backend, open_backend, open_configured_backend
from .stores.base import FilterSpec, Scored

__all__ = ["Isolation", "SessionMessages", "UserMemories"]

Embedder = Callable[[str], Sequence[float]]


class SessionMessages:
    """One session's messages for one user. Every write checks the session is active.

    A handle, not a door: it keeps its backend private and none of its methods takes a
    scope, so whoever holds it (an agent) reaches this one session and nothing else.
    """

    def __init__(self, backend: Backend, sessions: SessionManager, scope: Scope) -> None:
        self._scope = policy.require_scope(scope, session=True)
        self._backend, self._sessions = backend, sessions

    @property
    def scope(self) -> Scope:
        return self._scope

    # Each method and its ``a`` twin run one plan (``plans``); only the I/O differs.

    def _add(self, /, role: str, content: Any, **metadata: Any) -> Plan[Message]:
        """Append one message (its metadata as keywords); the stored message."""
        return (yield from self._add_messages([Message(role, content, metadata)]))[0]

    def _add_messages(
        self, messages: Sequence[Message], *, idempotency_key: str | None = None
    ) -> Plan[list[Message]]:
        """Append; with ``idempotency_key`` a retry of a stored append writes nothing."""
        s = self._sessions
        key = idempotency_key
        return (yield from step(s.append, s.aappend, self._scope, messages, idempotency_key=key))

    def _get(self, *, last: int | None = None) -> Plan[list[Message]]:
        """The session's messages, oldest first (``last``: only the newest ``last``)."""
        b = self._backend
        return (yield from step(b.get_messages, b.aget_messages, self._scope, last=last))

    def _clear(self) -> Plan[int]:
        """Delete the session's messages; how many."""
        b = self._backend
        return (yield from step(b.delete_messages, b.adelete_messages, self._scope))

    add, aadd = twins(_add)
    add_messages, aadd_messages = twins(_add_messages)
    get, aget = twins(_get)
    clear, aclear = twins(_clear)


class UserMemories:
    """One user's persistent memory. Outlives every session.

    A scope with a session stamps new memories with it (where they were made); reads are
    per user. Like ``SessionMessages``, a handle that reaches this user alone.
    """

    def __init__(self, backend: Backend, scope: Scope, embed: Embedder | None = None) -> None:
        self._scope = policy.require_scope(scope)
        self._backend, self._embed = backend, embed

    @property
    def scope(self) -> Scope:
        return self._scope

    def _memory(
        self,
        content: str,
        metadata: Mapping[str, Any] | None,
        embedding: Sequence[float] | None,
        id: str | None,
    ) -> Memory:
        if embedding is None and self._embed is not None:
            embedding = self._embed(content)
        return Memory(
            id or str(uuid.uuid4()),
            content,
            dict(metadata or {}),
            None if embedding is None else [float(x) for x in embedding],
        )

    def _query(self, query: str | Sequence[float]) -> Sequence[float]:
        if not isinstance(query, str):
            return query
        if self._embed is None:
            raise InvalidInput("searching by text needs an embed function", field="query")
        return self._embed(query)

    def _add(
        self,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        embedding: Sequence[float] | None = None,
        id: str | None = None,
    ) -> Plan[str]:
        """Store one memory (embedded with ``embed`` unless ``embedding`` is given); its id."""
        memory = self._memory(content, metadata, embedding, id)
        b = self._backend
        return (yield from step(b.upsert_memories, b.aupsert_memories, self._scope, [memory]))[0]

    def _ranking(
        self, query: str | Sequence[float], mode: str, text: str | None
    ) -> tuple[Sequence[float] | None, str | None]:
        """(vector, text) for the backend: a text query is also the keyword query of the
        text and hybrid modes; ``mode="text"`` needs no embedding."""
        if mode != "vector" and text is None and isinstance(query, str):
            text = query
        if mode == "text":
            return (None if isinstance(query, str) else query), text
        return self._query(query), text

    def _search(
        self,
        query: str | Sequence[float],
        k: int = 4,
        *,
        filter: FilterSpec = None,
        mode: str = "vector",
        text: str | None = None,
        alpha: float = 0.5,
        text_k: int | None = None,
    ) -> Plan[builtins.list[Scored]]:
        """The ``k`` best memories: by vector (``mode="vector"``), by the query's words
        (``"text"``), or both fused (``"hybrid"``, ``alpha`` weighting the vector side);
        see ``Backend.search_memories``."""
        vector, words = self._ranking(query, mode, text)
        b = self._backend
        return (
            yield from step(
                b.search_memories,
                b.asearch_memories,
                self._scope,
                vector,
                k,
                filter=filter,
                text=words,
                mode=mode,
                alpha=alpha,
                text_k=text_k,
            )
        )

    def _list(
        self, *, filter: FilterSpec = None, limit: int | None = None
    ) -> Plan[builtins.list[Memory]]:
        """The user's memories, oldest first."""
        b = self._backend
        return (
            yield from step(
                b.list_memories, b.alist_memories, self._scope, filter=filter, limit=limit
            )
        )

    def _get(self, ids: Sequence[str]) -> Plan[builtins.list[Memory]]:
        """These memories of the user's, in the order asked (an id not found: left out)."""
        b = self._backend
        return (yield from step(b.get_memories, b.aget_memories, self._scope, ids))

    def _delete(self, ids: Sequence[str] | None = None, *, filter: FilterSpec = None) -> Plan[int]:
        """Delete these memories (or those matching ``filter``); how many."""
        b = self._backend
        return (
            yield from step(
                b.delete_memories, b.adelete_memories, self._scope, ids=ids, filter=filter
            )
        )

    add, aadd = twins(_add)
    search, asearch = twins(_search)
    list, alist = twins(_list)
    get, aget = twins(_get)
    delete, adelete = twins(_delete)


class Isolation:
    """Sessions, histories and memories for many users over one backend."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        session_timeout: float = DEFAULT_TIMEOUT,
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
        statement_timeout: float | None = None,
    ) -> Isolation:
        """Open the backend the config names (SQLite file by default); ``statement_timeout``
        bounds each storage call in seconds (the server passes ``server.request_timeout``)."""
        config = source if isinstance(source, Config) else load_config(source, secrets)
        return cls(
            open_configured_backend(config, statement_timeout=statement_timeout),
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
