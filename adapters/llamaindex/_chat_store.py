"""Chat stores for LlamaIndex, bound to one (tenant, user): keys are that user's session ids.

``MuxiChatStore`` is a ``BaseChatStore`` (what ``ChatMemoryBuffer`` and chat engines use);
``MuxiDBChatStore`` is an ``AsyncDBChatStore`` (what the newer ``Memory`` uses, with its
active/archived FIFO queue). Both run on any ``Backend`` and share one rule set:

- a key is a session id of this user: another user's session with the same id is a
  different session, and ``get_keys`` lists only this user's sessions;
- writing to a key this user has no session for creates the session under that id (session
  ids are per user, so nothing of anyone else's is touched); pass
  ``create_sessions=False`` to require existing sessions (``SessionNotFound`` otherwise);
- every write touches the session, so an expired one raises ``SessionExpired``; reads and
  deletes still work on an expired session (its history stays until purged);
- ``delete_message(key, idx)`` takes a position in the key's whole history, oldest first,
  as ``SimpleChatStore`` does (negative positions count from the end); past the end it
  returns ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus

from muxi_isolation import policy
from muxi_isolation.errors import InvalidInput, SessionNotFound, UnsupportedStore
from muxi_isolation.records import Message
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.base import Backend

from ._messages import to_chat_message, to_message
from ._scope import resolve_scope

__all__ = ["MuxiChatStore", "MuxiDBChatStore"]


class _Binding:
    """The backend, session manager and scope a chat store acts through."""

    def __init__(
        self,
        backend: Backend,
        scope: Scope | None,
        sessions: SessionManager | None,
        create_sessions: bool,
    ) -> None:
        if not isinstance(backend, Backend):
            raise UnsupportedStore(
                f"a muxi_isolation Backend is required, got {type(backend).__name__}"
            )
        self.backend = backend
        self.scope = scope
        self.sessions = sessions or SessionManager(backend)
        self.create_sessions = create_sessions

    def user(self) -> Scope:
        return resolve_scope(self.scope).user()

    def readable(self, key: str) -> Scope:
        return self.user().with_session(key)

    def writable(self, key: str) -> Scope:
        user = self.user()
        record = (self.sessions.ensure if self.create_sessions else self.sessions.touch)(user, key)
        return user.with_session(record.id)

    def append(self, key: str, records: list[Message]) -> None:
        """Append in one transaction with the session check; create the session if allowed."""
        scope = self.readable(key)
        try:
            self.sessions.append(scope, records)
        except SessionNotFound:
            if not self.create_sessions:
                raise
            self.sessions.ensure(scope.user(), key)
            self.sessions.append(scope, records)

    async def aappend(self, key: str, records: list[Message]) -> None:
        scope = self.readable(key)
        try:
            await self.sessions.aappend(scope, records)
        except SessionNotFound:
            if not self.create_sessions:
                raise
            await self.sessions.aensure(scope.user(), key)
            await self.sessions.aappend(scope, records)

    async def awritable(self, key: str) -> Scope:
        user = self.user()
        touch = self.sessions.aensure if self.create_sessions else self.sessions.atouch
        record = await touch(user, key)
        return user.with_session(record.id)


def _records(messages: Sequence[ChatMessage], status: str | None = None) -> list[Message]:
    """Convert (and check) before any session is created, so bad input writes nothing."""
    records = [to_message(m) for m in messages]
    for record in records:
        policy.check_metadata(record.metadata)
    return records if status is None else [replace(r, status=status) for r in records]


def _at(rows: Sequence[Message], idx: int) -> Message | None:
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise InvalidInput("a message index must be an integer", field="idx")
    return rows[idx] if -len(rows) <= idx < len(rows) else None


def _status(status: MessageStatus | str | None) -> str | None:
    return None if status is None else MessageStatus(status).value


def _chat(rows: Sequence[Message]) -> list[ChatMessage]:
    return [to_chat_message(m) for m in rows]


def _sid(scope: Scope) -> str:
    assert scope.session_id is not None
    return scope.session_id


def _seq(message: Message) -> int:
    assert message.seq is not None, "stored messages carry a seq"
    return message.seq


class MuxiChatStore(BaseChatStore):
    """A ``BaseChatStore`` whose keys are one user's sessions.

    Use it as the store of ``ChatMemoryBuffer``::

        store = MuxiChatStore(backend, Scope.parse("tenant_a:user_1"))
        memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key=session_id)
    """

    _binding: _Binding = PrivateAttr()

    def __init__(
        self,
        backend: Backend,
        scope: Scope | None = None,
        *,
        sessions: SessionManager | None = None,
        create_sessions: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._binding = _Binding(backend, scope, sessions, create_sessions)

    @classmethod
    def class_name(cls) -> str:
        return "MuxiChatStore"

    # -- sync

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        records = _records(messages)
        b = self._binding
        b.backend.replace_messages(b.writable(key), records)

    def get_messages(self, key: str) -> list[ChatMessage]:
        b = self._binding
        return _chat(b.backend.get_messages(b.readable(key)))

    def add_message(self, key: str, message: ChatMessage) -> None:
        records = _records([message])
        self._binding.append(key, records)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        b = self._binding
        scope = b.readable(key)
        if b.backend.get_session(scope, _sid(scope)) is None:
            return None
        rows = b.backend.get_messages(scope)
        b.backend.delete_messages(scope)
        return _chat(rows)

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        b = self._binding
        scope = b.readable(key)
        target = _at(b.backend.get_messages(scope), idx)
        found = None if target is None else b.backend.delete_message(scope, _seq(target))
        return None if found is None else to_chat_message(found)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        b = self._binding
        scope = b.readable(key)
        last = b.backend.get_messages(scope, last=1)
        found = b.backend.delete_message(scope, _seq(last[0])) if last else None
        return None if found is None else to_chat_message(found)

    def get_keys(self) -> list[str]:
        b = self._binding
        return [s.id for s in b.backend.list_sessions(b.user())]

    # -- async

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        records = _records(messages)
        b = self._binding
        await b.backend.areplace_messages(await b.awritable(key), records)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        b = self._binding
        return _chat(await b.backend.aget_messages(b.readable(key)))

    async def async_add_message(self, key: str, message: ChatMessage) -> None:
        records = _records([message])
        await self._binding.aappend(key, records)

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        b = self._binding
        scope = b.readable(key)
        if await b.backend.aget_session(scope, _sid(scope)) is None:
            return None
        rows = await b.backend.aget_messages(scope)
        await b.backend.adelete_messages(scope)
        return _chat(rows)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        b = self._binding
        scope = b.readable(key)
        target = _at(await b.backend.aget_messages(scope), idx)
        found = None if target is None else await b.backend.adelete_message(scope, _seq(target))
        return None if found is None else to_chat_message(found)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        b = self._binding
        scope = b.readable(key)
        last = await b.backend.aget_messages(scope, last=1)
        found = await b.backend.adelete_message(scope, _seq(last[0])) if last else None
        return None if found is None else to_chat_message(found)

    async def aget_keys(self) -> list[str]:
        b = self._binding
        return [s.id for s in await b.backend.alist_sessions(b.user())]


class MuxiDBChatStore(AsyncDBChatStore):
    """An ``AsyncDBChatStore`` for ``llama_index.core.memory.Memory``, one user's sessions.

    ``Memory`` keeps its FIFO queue as ``active`` messages and archives the oldest ones when
    the queue passes its token limit; both statuses live in the session's message table::

        store = MuxiDBChatStore(backend, Scope.parse("tenant_a:user_1"))
        memory = Memory.from_defaults(session_id=session_id, chat_store=store)
    """

    _binding: _Binding = PrivateAttr()

    def __init__(
        self,
        backend: Backend,
        scope: Scope | None = None,
        *,
        sessions: SessionManager | None = None,
        create_sessions: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._binding = _Binding(backend, scope, sessions, create_sessions)

    @classmethod
    def class_name(cls) -> str:
        return "MuxiDBChatStore"

    async def get_messages(
        self,
        key: str,
        status: MessageStatus | None = MessageStatus.ACTIVE,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[ChatMessage]:
        b = self._binding
        rows = await b.backend.aget_messages(
            b.readable(key), status=_status(status), limit=limit, offset=offset
        )
        return _chat(rows)

    async def count_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> int:
        b = self._binding
        return await b.backend.acount_messages(b.readable(key), status=_status(status))

    async def add_message(
        self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        await self.add_messages(key, [message], status=status)

    async def add_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        records = _records(messages, _status(status))
        if records:
            await self._binding.aappend(key, records)

    async def set_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        records = _records(messages, _status(status))
        b = self._binding
        await b.backend.areplace_messages(await b.awritable(key), records)

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        b = self._binding
        scope = b.readable(key)
        target = _at(await b.backend.aget_messages(scope), idx)
        found = None if target is None else await b.backend.adelete_message(scope, _seq(target))
        return None if found is None else to_chat_message(found)

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        b = self._binding
        await b.backend.adelete_messages(b.readable(key), status=_status(status))

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        b = self._binding
        return _chat(await b.backend.atake_oldest(b.readable(key), n, archive=False))

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        b = self._binding
        return _chat(await b.backend.atake_oldest(await b.awritable(key), n, archive=True))

    async def get_keys(self) -> list[str]:
        b = self._binding
        return [s.id for s in await b.backend.alist_sessions(b.user())]
