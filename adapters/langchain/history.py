"""A LangChain chat history bound to one (tenant, user, session), and its factory.

Drop-in for ``RunnableWithMessageHistory``:

    chain = RunnableWithMessageHistory(
        prompt | model,
        MuxiHistoryFactory.from_url("sqlite:///app.db"),  # or (backend) / (Isolation)
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=history_factory_config,
    )
    chain.invoke({"question": "hi"},
                 {"configurable": {"user_id": "tenant_a:user_1", "session_id": "chat-1"}})

A session id the client picks (``"chat-1"``) becomes that user's session on first use, as
LlamaIndex's chat stores and LangGraph's threads do (``create_sessions=False`` requires
sessions made with ``SessionManager.create``). Session ids are per user: another user's
``"chat-1"`` is a different session. Without ``history_factory_config`` the chain passes
only ``session_id``, and the user is the one ``use_scope()`` or the HTTP middleware set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from langchain_core.runnables import ConfigurableFieldSpec

from muxi_isolation import policy
from muxi_isolation.context import resolve
from muxi_isolation.errors import InvalidIdentifier, SessionNotFound
from muxi_isolation.records import ACTIVE
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.base import Backend

from .._owned import OwnsBackend, Storage, unpack
from ._config import config_scope
from ._messages import from_record, to_record

__all__ = ["MuxiChatMessageHistory", "MuxiHistoryFactory", "history_factory_config"]

_HINT = (
    "no user for this history: pass history_factory_config=history_factory_config to "
    "RunnableWithMessageHistory and a user_id in config['configurable'], or call the chain "
    "inside use_scope()"
)


class MuxiChatMessageHistory(OwnsBackend, BaseChatMessageHistory):
    """One session's chat history for one user, on any backend.

    Reads see only this session's active messages, oldest first; reading twice with no
    write in between gives the same list. Every write first checks, through the
    ``SessionManager``, that the session is this user's and not expired (``SessionNotFound``
    / ``SessionExpired``) and pushes its expiry forward; ``add_messages`` does that and
    appends the whole batch in one transaction. A session this user does not have yet is
    created under the scope's id on the first write (in a second transaction, with the
    append), unless ``create_sessions=False``.
    """

    def __init__(
        self,
        backend: Storage,
        scope: Scope,
        sessions: SessionManager | None = None,
        *,
        create_sessions: bool = True,
    ) -> None:
        super().__init__()
        self.scope = policy.require_scope(scope, session=True)
        self.backend, self.sessions = unpack(backend, sessions)
        self.create_sessions = create_sessions

    def _storage_backend(self) -> Backend:
        return self.backend

    @property
    def session_id(self) -> str:
        assert self.scope.session_id is not None
        return self.scope.session_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [from_record(r) for r in self.backend.get_messages(self.scope, status=ACTIVE)]

    async def aget_messages(self) -> list[BaseMessage]:
        records = await self.backend.aget_messages(self.scope, status=ACTIVE)
        return [from_record(r) for r in records]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        records = [to_record(m) for m in messages]
        if not records:
            return
        self.sessions.append(self.scope, records, create=self.create_sessions)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        records = [to_record(m) for m in messages]
        if not records:
            return
        await self.sessions.aappend(self.scope, records, create=self.create_sessions)

    def clear(self) -> None:
        """Delete every message of this session; the session and the user's memory stay."""
        self.sessions.touch(self.scope, self.session_id)
        self.backend.delete_messages(self.scope)

    async def aclear(self) -> None:
        await self.sessions.atouch(self.scope, self.session_id)
        await self.backend.adelete_messages(self.scope)

    def __repr__(self) -> str:
        return f"MuxiChatMessageHistory(scope={self.scope})"


history_factory_config: list[ConfigurableFieldSpec] = [
    # Both ids are strings the chain passes by name to the factory, shared by its steps.
    ConfigurableFieldSpec(
        id=key, annotation=str, name=name, description=description, default=None, is_shared=True
    )
    for key, name, description in (
        ("user_id", "User ID", 'The X-Muxi-User-Id value: "tenant_a:user_1", or "user_1".'),
        ("session_id", "Session ID", "A session of that user (SessionManager.create)."),
    )
]
"""The two ``ConfigurableFieldSpec``s ``MuxiHistoryFactory`` takes, for
``RunnableWithMessageHistory(history_factory_config=...)``."""


class MuxiHistoryFactory(OwnsBackend):
    """``get_session_history`` for ``RunnableWithMessageHistory``, per user and session.

    With ``history_factory_config`` the chain calls it with ``user_id`` (the compound header
    form, ``"tenant_a:user_1"``) and ``session_id``; without it, with ``session_id`` alone,
    and the user is the one ``use_scope()`` or the HTTP middleware set (``MissingScope``
    when there is none: never a default user).

    A session id the user has no session for becomes that user's session (as LlamaIndex's
    chat stores and LangGraph's threads do); another user's session of the same id is never
    reached, since session ids are per user. ``create_sessions=False`` requires a session
    made beforehand: an unknown one raises ``SessionNotFound``. An expired session raises
    ``SessionExpired`` either way. ``create_missing`` is the deprecated name of
    ``create_sessions``.
    """

    def __init__(
        self,
        backend: Storage,
        sessions: SessionManager | None = None,
        *,
        create_sessions: bool = True,
        create_missing: bool | None = None,
    ) -> None:
        if create_missing is not None:
            warnings.warn(
                "MuxiHistoryFactory(create_missing=) is now create_sessions=",
                DeprecationWarning,
                stacklevel=2,
            )
            create_sessions = create_missing
        self.backend, self.sessions = unpack(backend, sessions)
        self.create_sessions = create_sessions

    def _storage_backend(self) -> Backend:
        return self.backend

    def scope(self, user_id: str | None, session_id: str) -> Scope:
        # The one rule (context.resolve): user_id, use_scope's and the running config's user
        # must agree, and a session use_scope names must be session_id.
        if user_id is not None and not isinstance(user_id, str):
            raise InvalidIdentifier("user_id", 'must be a string (use "0" for single-user mode)')
        named = None if user_id is None else Scope.parse(user_id)
        return resolve(named, config_scope(), session=session_id, hint=_HINT)

    def __call__(self, session_id: str, user_id: str | None = None) -> MuxiChatMessageHistory:
        scope = self.scope(user_id, session_id)
        history = MuxiChatMessageHistory(
            self.backend, scope, self.sessions, create_sessions=self.create_sessions
        )
        # Only a read here: the chain calls this synchronously even on its async path, so a
        # write would block the event loop; a new session is made by the first append.
        try:
            self.sessions.active(history.scope, history.session_id)
        except SessionNotFound:
            if not self.create_sessions:
                raise
        return history
