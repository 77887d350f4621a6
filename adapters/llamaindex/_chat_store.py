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
from .._plans import Plan, arun, step, twins
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

    def writable(self, key: str) -> Plan[Scope]:
        user = self.readable(key).user()
        s = self.sessions
        if self.create_sessions:
            record = yield from step(s.ensure, s.aensure, user, key)
        else:
            record = yield from step(s.touch, s.atouch, user, key)
        return user.with_session(record.id)

    def append(self, key: str, records: list[Message]) -> Plan[None]:
        """Append in one transaction with the session check; create the session if allowed."""
        scope = self.readable(key)
        s = self.sessions
        try:
            yield from step(s.append, s.aappend, scope, records)
        except SessionNotFound:
            if not self.create_sessions:
                raise
            yield from step(s.ensure, s.aensure, scope.user(), key)
            yield from step(s.append, s.aappend, scope, records)

    def replace(self, key: str, records: list[Message]) -> Plan[None]:
        scope = yield from self.writable(key)
        b = self.backend
        yield from step(b.replace_messages, b.areplace_messages, scope, records)

    def delete_at(self, key: str, idx: int) -> Plan[ChatMessage | None]:
        """Delete the message at ``idx`` of the key's whole history (``None``: past its end)."""
        scope = self.readable(key)
        b = self.backend
        target = _at((yield from step(b.get_messages, b.aget_messages, scope)), idx)
        if target is None:
            return None
        found = yield from step(b.delete_message, b.adelete_message, scope, _seq(target))
        return None if found is None else to_chat_message(found)

    def keys(self) -> Plan[list[str]]:
        b = self.backend
        return [s.id for s in (yield from step(b.list_sessions, b.alist_sessions, self.user()))]


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


class _BoundStore(OwnsBackend):
    """Both chat stores' constructor: one ``_Binding``, then the store's own fields.

    Each pydantic subclass declares ``_binding`` and ``_owned`` as private attributes.
    """

    _binding: _Binding

    def __init__(
        self,
        backend: Storage,
        scope: Scope | None = None,
        *,
        sessions: SessionManager | None = None,
        create_sessions: bool = True,
        **kwargs: Any,
    ) -> None:
        binding = _Binding(backend, scope, sessions, create_sessions)  # refused before init
        super().__init__(**kwargs)
        self._binding = binding
        self._bound(binding)

    def _bound(self, binding: _Binding) -> None:
        """Record what a serializable store keeps of its binding (nothing by default)."""

    def _storage_backend(self) -> Backend:
        return self._binding.backend


class MuxiChatStore(_BoundStore, BaseChatStore):
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

    def _bound(self, binding: _Binding) -> None:
        self.user_id = None if binding.scope is None else binding.scope.header
        self.session_timeout = binding.sessions.timeout.total_seconds()
        self.create_sessions = binding.create_sessions

    @classmethod
    def class_name(cls) -> str:
        return "MuxiChatStore"

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

    # -- the operations, each one plan for both halves

    def _set_messages(self, key: str, messages: list[ChatMessage]) -> Plan[None]:
        yield from self._binding.replace(key, _records(messages))

    set_messages, aset_messages = twins(_set_messages)

    def _get_messages(self, key: str) -> Plan[list[ChatMessage]]:
        b = self._binding
        rows = yield from step(b.backend.get_messages, b.backend.aget_messages, b.readable(key))
        return _chat(rows)

    get_messages, aget_messages = twins(_get_messages)

    def _add_message(self, key: str, message: ChatMessage) -> Plan[None]:
        yield from self._binding.append(key, _records([message]))

    add_message, async_add_message = twins(_add_message, async_name="async_add_message")

    def _delete_messages(self, key: str) -> Plan[list[ChatMessage] | None]:
        b = self._binding
        scope = b.readable(key)
        be = b.backend
        if (yield from step(be.get_session, be.aget_session, scope, _sid(scope))) is None:
            return None
        rows = yield from step(be.get_messages, be.aget_messages, scope)
        yield from step(be.delete_messages, be.adelete_messages, scope)
        return _chat(rows)

    delete_messages, adelete_messages = twins(_delete_messages)

    def _delete_message(self, key: str, idx: int) -> Plan[ChatMessage | None]:
        return (yield from self._binding.delete_at(key, idx))

    delete_message, adelete_message = twins(_delete_message)

    def _delete_last_message(self, key: str) -> Plan[ChatMessage | None]:
        b = self._binding
        scope = b.readable(key)
        be = b.backend
        last = yield from step(be.get_messages, be.aget_messages, scope, last=1)
        if not last:
            return None
        found = yield from step(be.delete_message, be.adelete_message, scope, _seq(last[0]))
        return None if found is None else to_chat_message(found)

    delete_last_message, adelete_last_message = twins(_delete_last_message)

    def _get_keys(self) -> Plan[list[str]]:
        return (yield from self._binding.keys())

    get_keys, aget_keys = twins(_get_keys)


class MuxiDBChatStore(_BoundStore, AsyncDBChatStore):
    """An ``AsyncDBChatStore`` for ``llama_index.core.memory.Memory``, one user's sessions.

    ``Memory`` keeps its FIFO queue as ``active`` messages and archives the oldest ones when
    the queue passes its token limit; both statuses live in the session's message table::

        store = MuxiDBChatStore(backend, Scope.parse("tenant_a:user_1"))
        memory = Memory.from_defaults(session_id=session_id, chat_store=store)
    """

    _binding: _Binding = PrivateAttr()
    _owned: Backend | None = PrivateAttr(default=None)

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
            await arun(self._binding.append(key, records))

    async def set_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        await arun(self._binding.replace(key, _records(messages, _status(status))))

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        return await arun(self._binding.delete_at(key, idx))

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        b = self._binding
        await b.backend.adelete_messages(b.readable(key), status=_status(status))

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        b = self._binding
        return _chat(await b.backend.atake_oldest(b.readable(key), n, archive=False))

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        b = self._binding
        scope = await arun(b.writable(key))
        return _chat(await b.backend.atake_oldest(scope, n, archive=True))

    async def get_keys(self) -> list[str]:
        return await arun(self._binding.keys())


# LlamaIndex finds a chat store to load by its class name in this table, which has no
# public way in: without the entry ChatMemoryBuffer.from_dict refuses MuxiChatStore.
cast(dict[str, Any], RECOGNIZED_CHAT_STORES).setdefault(MuxiChatStore.class_name(), MuxiChatStore)
