"""Session lifecycle: create, get, touch, expire. Each session is bound to one user.

A session is a conversation context with an idle timeout (``session_timeout``): each use
pushes ``expires_at`` forward; once it passes, writing to the session raises
``SessionExpired``. The user's persistent memory is not touched by expiry.

Looking up another user's session gives the same ``SessionNotFound`` as an unknown id, so
ids cannot be probed. The clock is injectable so tests can move time.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from . import policy
from .audit import probing
from .errors import DuplicateRequest, InvalidInput, SessionExists, SessionExpired, SessionNotFound
from .idempotency import message_request, replayed
from .records import Message, Receipt, SessionRecord
from .scope import Scope, canonical_id
from .stores.base import Backend

__all__ = ["Clock", "SessionManager", "new_session_id", "utc_now"]

Clock = Callable[[], datetime]
DEFAULT_TIMEOUT = 3600


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_session_id() -> str:
    """``sess_`` and 192 random bits, URL-safe."""
    return "sess_" + secrets.token_urlsafe(24)


class SessionManager:
    """Creates and checks sessions on a backend, with an idle timeout in seconds."""

    def __init__(
        self, backend: Backend, *, timeout: float = DEFAULT_TIMEOUT, clock: Clock = utc_now
    ) -> None:
        if not timeout > 0:  # NaN too
            raise InvalidInput("session timeout must be positive", field="timeout")
        try:
            self.timeout = timedelta(seconds=timeout)
        except OverflowError:
            raise InvalidInput("session timeout is too long", field="timeout") from None
        self.backend = backend
        self.clock = clock

    def new_record(self, scope: Scope, session_id: str | None = None) -> SessionRecord:
        """A session record for ``scope``'s user, not stored yet (a new id unless given)."""
        return self._new_record(policy.require_scope(scope).user(), session_id)

    def _new_record(self, scope: Scope, session_id: str | None) -> SessionRecord:
        now = self.clock()
        sid = new_session_id() if session_id is None else canonical_id(session_id, "session_id")
        return SessionRecord(sid, scope.user(), now, now, now + self.timeout)

    def _checked(self, record: SessionRecord | None, session_id: str) -> SessionRecord:
        if record is None:
            raise SessionNotFound(session_id)
        if record.expired(self.clock()):
            raise SessionExpired(session_id)
        return record

    # -- sync

    def create(self, scope: Scope, session_id: str | None = None) -> SessionRecord:
        """A new session for ``scope``'s user; ``session_id`` lets an app pick the id."""
        user = policy.require_scope(scope).user()
        return self.backend.insert_session(user, self._new_record(user, session_id))

    def get(self, scope: Scope, session_id: str) -> SessionRecord:
        """The session, expired or not; ``SessionNotFound`` if it is not this user's."""
        found = self.backend.get_session(scope, canonical_id(session_id, "session_id"))
        if found is None:
            raise SessionNotFound(session_id)
        return found

    def active(self, scope: Scope, session_id: str) -> SessionRecord:
        """The session if it is this user's and not expired; the check before every write."""
        sid = canonical_id(session_id, "session_id")
        return self._checked(self.backend.get_session(scope, sid), sid)

    def touch(self, scope: Scope, session_id: str) -> SessionRecord:
        """Push an active session's expiry forward from now: one transaction, which never
        revives a session that expired or was deleted meanwhile."""
        sid = canonical_id(session_id, "session_id")
        now = self.clock()
        renewed = self.backend.renew_session(scope, sid, now=now, expires_at=now + self.timeout)
        if renewed is None:  # only on failure: read once more to say why
            self._checked(self.backend.get_session(scope, sid), sid)
            # another request created it between the two reads: renew it now
            renewed = self.backend.renew_session(scope, sid, now=now, expires_at=now + self.timeout)
        if renewed is None:
            raise SessionExpired(sid)
        return renewed

    def ensure(self, scope: Scope, session_id: str) -> SessionRecord:
        """Touch the session, creating it under this id first if this user has none."""
        try:
            with probing():  # a miss here is ours, not an answer: no audit event
                return self.touch(scope, session_id)
        except SessionNotFound:
            pass
        try:
            return self.create(scope, session_id)
        except SessionExists:  # another request created it first
            return self.touch(scope, session_id)

    def append(
        self,
        scope: Scope,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        create: bool = False,
    ) -> list[Message]:
        """Append to the scope's session if it is active, extending it: one transaction.

        With ``idempotency_key``, a retry of an append already stored for this user gets the
        stored messages back and writes nothing (the same key with other messages:
        ``KeyReused``). With ``create``, a session this user does not have yet is created
        under the scope's id, in the append's transaction.
        """
        scope = policy.require_scope(scope, session=True)
        if idempotency_key is None:
            return self._append(scope, messages, None, create)
        request = message_request(scope.session_id, list(messages))
        found = replayed(self.backend.get_receipt(scope, idempotency_key), request)
        if found is None:
            try:
                receipt = Receipt(idempotency_key, request, {})
                return self._append(scope, messages, receipt, create)
            except DuplicateRequest:  # a twin of this request was stored meanwhile
                found = replayed(self.backend.get_receipt(scope, idempotency_key), request)
        return self._stored(scope, found, self.backend.get_messages(scope))

    def _append(
        self, scope: Scope, messages: Sequence[Message], receipt: Receipt | None, create: bool
    ) -> list[Message]:
        try:
            return self._store(scope, messages, receipt, None)
        except SessionNotFound:
            if not create:
                raise
        try:
            return self._store(scope, messages, receipt, self._new_record(scope, scope.session_id))
        except SessionExists:  # another request created it first
            return self._store(scope, messages, receipt, None)

    def _store(
        self,
        scope: Scope,
        messages: Sequence[Message],
        receipt: Receipt | None,
        create: SessionRecord | None,
    ) -> list[Message]:
        now = self.clock()
        expires_at = now + self.timeout
        return self.backend.append_to_session(
            scope, messages, now=now, expires_at=expires_at, create=create, receipt=receipt
        )

    @staticmethod
    def _stored(scope: Scope, receipt: Receipt | None, history: list[Message]) -> list[Message]:
        """The messages a stored request appended, read back from the history."""
        if receipt is None:  # stored, then purged between the two reads
            raise SessionNotFound(str(scope.session_id))
        seqs = set(receipt.seqs)
        return [m for m in history if m.seq in seqs]

    def list(self, scope: Scope) -> builtins.list[SessionRecord]:
        return self.backend.list_sessions(scope)

    def expire(self, scope: Scope, session_id: str) -> None:
        """End a session now; its messages stay until purged, the user's memory always."""
        record = self.get(scope, session_id)
        now = self.clock()
        self.backend.touch_session(scope, record.id, record.last_active_at, now)

    def delete(self, scope: Scope, session_id: str) -> None:
        """Delete the session and its messages; ``SessionNotFound`` if not this user's."""
        if not self.backend.delete_session(scope, canonical_id(session_id, "session_id")):
            raise SessionNotFound(session_id)

    # -- async

    async def acreate(self, scope: Scope, session_id: str | None = None) -> SessionRecord:
        user = policy.require_scope(scope).user()
        return await self.backend.ainsert_session(user, self._new_record(user, session_id))

    async def aget(self, scope: Scope, session_id: str) -> SessionRecord:
        found = await self.backend.aget_session(scope, canonical_id(session_id, "session_id"))
        if found is None:
            raise SessionNotFound(session_id)
        return found

    async def aactive(self, scope: Scope, session_id: str) -> SessionRecord:
        sid = canonical_id(session_id, "session_id")
        return self._checked(await self.backend.aget_session(scope, sid), sid)

    async def atouch(self, scope: Scope, session_id: str) -> SessionRecord:
        sid = canonical_id(session_id, "session_id")
        now = self.clock()
        renewed = await self.backend.arenew_session(
            scope, sid, now=now, expires_at=now + self.timeout
        )
        if renewed is None:
            self._checked(await self.backend.aget_session(scope, sid), sid)
            renewed = await self.backend.arenew_session(
                scope, sid, now=now, expires_at=now + self.timeout
            )
        if renewed is None:
            raise SessionExpired(sid)
        return renewed

    async def aensure(self, scope: Scope, session_id: str) -> SessionRecord:
        try:
            with probing():
                return await self.atouch(scope, session_id)
        except SessionNotFound:
            pass
        try:
            return await self.acreate(scope, session_id)
        except SessionExists:
            return await self.atouch(scope, session_id)

    async def aappend(
        self,
        scope: Scope,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        create: bool = False,
    ) -> builtins.list[Message]:
        scope = policy.require_scope(scope, session=True)
        if idempotency_key is None:
            return await self._aappend(scope, messages, None, create)
        request = message_request(scope.session_id, list(messages))
        found = replayed(await self.backend.aget_receipt(scope, idempotency_key), request)
        if found is None:
            try:
                receipt = Receipt(idempotency_key, request, {})
                return await self._aappend(scope, messages, receipt, create)
            except DuplicateRequest:
                found = replayed(await self.backend.aget_receipt(scope, idempotency_key), request)
        return self._stored(scope, found, await self.backend.aget_messages(scope))

    async def _aappend(
        self, scope: Scope, messages: Sequence[Message], receipt: Receipt | None, create: bool
    ) -> builtins.list[Message]:
        try:
            return await self._astore(scope, messages, receipt, None)
        except SessionNotFound:
            if not create:
                raise
        record = self._new_record(scope, scope.session_id)
        try:
            return await self._astore(scope, messages, receipt, record)
        except SessionExists:
            return await self._astore(scope, messages, receipt, None)

    async def _astore(
        self,
        scope: Scope,
        messages: Sequence[Message],
        receipt: Receipt | None,
        create: SessionRecord | None,
    ) -> builtins.list[Message]:
        now = self.clock()
        expires_at = now + self.timeout
        return await self.backend.aappend_to_session(
            scope, messages, now=now, expires_at=expires_at, create=create, receipt=receipt
        )

    async def alist(self, scope: Scope) -> builtins.list[SessionRecord]:
        return await self.backend.alist_sessions(scope)

    async def aexpire(self, scope: Scope, session_id: str) -> None:
        record = await self.aget(scope, session_id)
        await self.backend.atouch_session(scope, record.id, record.last_active_at, self.clock())

    async def adelete(self, scope: Scope, session_id: str) -> None:
        if not await self.backend.adelete_session(scope, canonical_id(session_id, "session_id")):
            raise SessionNotFound(session_id)
