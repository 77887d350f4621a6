"""A LangChain chat history bound to one (tenant, user, session), and its factory.

Drop-in for ``RunnableWithMessageHistory``:

    chain = RunnableWithMessageHistory(
        prompt | model,
        MuxiHistoryFactory(backend),
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=history_factory_config,
    )
    chain.invoke({"question": "hi"},
                 {"configurable": {"user_id": "tenant_a:user_1", "session_id": sid}})
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from langchain_core.runnables import ConfigurableFieldSpec

from muxi_isolation import policy
from muxi_isolation.errors import InvalidIdentifier
from muxi_isolation.records import ACTIVE
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.base import Backend

from ._messages import from_record, to_record

__all__ = ["MuxiChatMessageHistory", "MuxiHistoryFactory", "history_factory_config"]


class MuxiChatMessageHistory(BaseChatMessageHistory):
    """One session's chat history for one user, on any backend.

    Reads see only this session's active messages, oldest first; reading twice with no
    write in between gives the same list. Every write first checks, through the
    ``SessionManager``, that the session is this user's and not expired (``SessionNotFound``
    / ``SessionExpired``) and pushes its expiry forward; ``add_messages`` then appends the
    whole batch in one backend call, one transaction.
    """

    def __init__(
        self, backend: Backend, scope: Scope, sessions: SessionManager | None = None
    ) -> None:
        super().__init__()
        self.scope = policy.require_scope(scope, session=True)
        self.backend = backend
        self.sessions = sessions if sessions is not None else SessionManager(backend)

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
        if records:
            self.sessions.append(self.scope, records)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        records = [to_record(m) for m in messages]
        if records:
            await self.sessions.aappend(self.scope, records)

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
    ConfigurableFieldSpec(
        id="user_id",
        annotation=str,
        name="User ID",
        description='The X-Muxi-User-Id value: "tenant_a:user_1", or "user_1".',
        default=None,
        is_shared=True,
    ),
    ConfigurableFieldSpec(
        id="session_id",
        annotation=str,
        name="Session ID",
        description="A session of that user (SessionManager.create).",
        default=None,
        is_shared=True,
    ),
]
"""The two ``ConfigurableFieldSpec``s ``MuxiHistoryFactory`` takes, for
``RunnableWithMessageHistory(history_factory_config=...)``."""


class MuxiHistoryFactory:
    """``get_session_history`` for ``RunnableWithMessageHistory``, per user and session.

    Called with ``user_id`` (the compound header form, ``"tenant_a:user_1"``) and
    ``session_id``, the ids of ``history_factory_config``. The session must be that user's
    and active: an unknown or another user's session raises ``SessionNotFound`` (the
    same for both), an expired one ``SessionExpired``. With ``create_missing=True`` an
    unknown session id is created for the user instead (an expired one still raises).
    """

    def __init__(
        self,
        backend: Backend,
        sessions: SessionManager | None = None,
        *,
        create_missing: bool = False,
    ) -> None:
        self.backend = backend
        self.sessions = sessions if sessions is not None else SessionManager(backend)
        self.create_missing = create_missing

    def scope(self, user_id: str, session_id: str) -> Scope:
        if not isinstance(user_id, str):
            raise InvalidIdentifier("user_id", 'must be a string (use "0" for single-user mode)')
        return Scope.parse(user_id, session_id)

    def __call__(self, *, user_id: str, session_id: str) -> MuxiChatMessageHistory:
        history = MuxiChatMessageHistory(
            self.backend, self.scope(user_id, session_id), self.sessions
        )
        if self.create_missing:
            self.sessions.ensure(history.scope, history.session_id)
        else:
            self.sessions.active(history.scope, history.session_id)
        return history
