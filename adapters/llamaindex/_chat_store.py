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

Both take a ``Backend`` (shared), an ``Isolation`` (its session timeout), or open their own
storage with ``from_url`` / ``from_config`` (see ``muxi_isolation.adapters._owned``).

``MuxiChatStore`` serializes, so ``ChatMemoryBuffer.from_dict(buffer.to_dict())`` works: the
dict holds the URL ``from_url`` was given, the bound user, the session timeout and
``create_sessions``, never a live connection, and loading it opens the store again with
``from_url``. Keep passwords out of that URL (``PGPASSWORD`` or a ``.pgpass`` file) if the
dict is stored, and keep the dict as private as the user's id: it acts for that user. A store
on a shared backend has no URL to give: ``from_dict`` refuses it with ``ConfigError``; build
the store again and pass it in (``ChatMemoryBuffer.from_dict({**data, "chat_store":
MuxiChatStore(backend, scope).to_dict()})`` does not work either, so use
``ChatMemoryBuffer(chat_store=store, chat_store_key=data["chat_store_key"], ...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus
from llama_index.core.storage.chat_store.loading import RECOGNIZED_CHAT_STORES

from muxi_isolation import policy
from muxi_isolation.errors import ConfigError, InvalidInput, SessionNotFound
from muxi_isolation.records import Message
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import DEFAULT_TIMEOUT, SessionManager
from muxi_isolation.stores.base import Backend

from .._owned import OwnsBackend, Storage, unpack
from ._messages import to_chat_message, to_message
from ._scope import resolve_scope

__all__ = ["MuxiChatStore", "MuxiDBChatStore"]


class _Binding:
    """The backend, session manager and scope a chat store acts through."""

    def __init__(
        self,
        backend: Storage,
        scope: Scope | None,
        sessions: SessionManager | None,
        create_sessions: bool,
    ) -> None:
        self.backend, self.sessions = unpack(backend, sessions)
        self.scope = None if scope is None else policy.require_scope(scope).user()
        self.create_sessions = create_sessions

    def user(self) -> Scope:
        return resolve_scope(self.scope).user()

    def readable(self, key: str) -> Scope:
        return resolve_scope(self.scope, key)  # the key is a source: the session it names

    def writable(self, key: str) -> Scope:
        user = self.readable(key).user()
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
        user = self.readable(key).user()
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


class MuxiChatStore(OwnsBackend, BaseChatStore):
    """A ``BaseChatStore`` whose keys are one user's sessions.

    Use it as the store of ``ChatMemoryBuffer``::

        store = MuxiChatStore.from_url("sqlite:///app.db", Scope.parse("tenant_a:user_1"))
        memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key=session_id)

    Its fields are what ``to_dict`` writes and ``from_dict`` reads back (module docstring).
    """

    url: str | None = Field(default=None, description="The URL from_url opened, if any.")
    user_id: str | None = Field(default=None, description="The bound user, header form.")
    session_timeout: float = Field(default=DEFAULT_TIMEOUT, description="Idle seconds.")
    create_sessions: bool = Field(default=True, description="A new key opens a session.")
    _binding: _Binding = PrivateAttr()
    _owned: Backend | None = PrivateAttr(default=None)

    def __init__(
        self,
        backend: Storage,
        scope: Scope | None = None,
        *,
        sessions: SessionManager | None = None,
        create_sessions: bool = True,
        **kwargs: Any,
    ) -> None:
        binding = _Binding(backend, scope, sessions, create_sessions)
        super().__init__(**kwargs)
        self.user_id = None if binding.scope is None else binding.scope.header
        self.session_timeout = binding.sessions.timeout.total_seconds()
        self.create_sessions = create_sessions
        self._binding = binding

    @classmethod
    def class_name(cls) -> str:
        return "MuxiChatStore"

    def _storage_backend(self) -> Backend:
        return self._binding.backend

    def _opened(self, url: str) -> None:
        self.url = url

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> MuxiChatStore:
        """The store ``to_dict`` described, on a new backend opened from its URL."""
        data = {**data, **kwargs}
        url = data.get("url")
        if not isinstance(url, str):
            raise ConfigError(
                "this MuxiChatStore was built on a shared backend, which is not serialized: "
                "build it again and pass it as chat_store="
            )
        user = data.get("user_id")
        return cls.from_url(
            url,
            None if user is None else Scope.parse(user),
            session_timeout=float(data.get("session_timeout", DEFAULT_TIMEOUT)),
            create_sessions=bool(data.get("create_sessions", True)),
        )

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


class MuxiDBChatStore(OwnsBackend, AsyncDBChatStore):
    """An ``AsyncDBChatStore`` for ``llama_index.core.memory.Memory``, one user's sessions.

    ``Memory`` keeps its FIFO queue as ``active`` messages and archives the oldest ones when
    the queue passes its token limit; both statuses live in the session's message table::

        store = MuxiDBChatStore(backend, Scope.parse("tenant_a:user_1"))
        memory = Memory.from_defaults(session_id=session_id, chat_store=store)
    """

    _binding: _Binding = PrivateAttr()
    _owned: Backend | None = PrivateAttr(default=None)

    def __init__(
        self,
        backend: Storage,
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

    def _storage_backend(self) -> Backend:
        return self._binding.backend

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


# LlamaIndex finds a chat store to load by its class name in this table, which has no
# public way in: without the entry ChatMemoryBuffer.from_dict refuses MuxiChatStore.
cast(dict[str, Any], RECOGNIZED_CHAT_STORES).setdefault(MuxiChatStore.class_name(), MuxiChatStore)
