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
from .plans import Plan, step, twins
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

    # Each public method and its ``a`` twin run one plan (``plans``): the checks, retries
    # and audit probes are written once; only the backend call differs (``step``).

    def _create(self, scope: Scope, session_id: str | None = None) -> Plan[SessionRecord]:
        """A new session for ``scope``'s user; ``session_id`` lets an app pick the id."""
        user = policy.require_scope(scope).user()
        b = self.backend
        record = self._new_record(user, session_id)
        return (yield from step(b.insert_session, b.ainsert_session, user, record))

    def _get(self, scope: Scope, session_id: str) -> Plan[SessionRecord]:
        """The session, expired or not; ``SessionNotFound`` if it is not this user's."""
        b = self.backend
        sid = canonical_id(session_id, "session_id")
        found = yield from step(b.get_session, b.aget_session, scope, sid)
        if found is None:
            raise SessionNotFound(session_id)
        return found

    def _active(self, scope: Scope, session_id: str) -> Plan[SessionRecord]:
        """The session if it is this user's and not expired; the check before every write."""
        b = self.backend
        sid = canonical_id(session_id, "session_id")
        return self._checked((yield from step(b.get_session, b.aget_session, scope, sid)), sid)

    def _touch(self, scope: Scope, session_id: str) -> Plan[SessionRecord]:
        """Push an active session's expiry forward from now: one transaction, which never
        revives a session that expired or was deleted meanwhile."""
        b = self.backend
        sid = canonical_id(session_id, "session_id")
        now = self.clock()
        renewed = yield from self._renew(scope, sid, now)
        if renewed is None:  # only on failure: read once more to say why
            self._checked((yield from step(b.get_session, b.aget_session, scope, sid)), sid)
            # another request created it between the two reads: renew it now
            renewed = yield from self._renew(scope, sid, now)
        if renewed is None:
            raise SessionExpired(sid)
        return renewed

    def _renew(self, scope: Scope, sid: str, now: datetime) -> Plan[SessionRecord | None]:
        b = self.backend
        expires_at = now + self.timeout
        return (
            yield from step(
                b.renew_session, b.arenew_session, scope, sid, now=now, expires_at=expires_at
            )
        )

    def _ensure(self, scope: Scope, session_id: str) -> Plan[SessionRecord]:
        """Touch the session, creating it under this id first if this user has none."""
        try:
            with probing():  # a miss here is ours, not an answer: no audit event
                return (yield from self._touch(scope, session_id))
        except SessionNotFound:
            pass
        try:
            return (yield from self._create(scope, session_id))
        except SessionExists:  # another request created it first
            return (yield from self._touch(scope, session_id))

    def _append(
        self,
        scope: Scope,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        create: bool = False,
    ) -> Plan[builtins.list[Message]]:
        """Append to the scope's session if it is active, extending it: one transaction.

        With ``idempotency_key``, a retry of an append already stored for this user gets the
        stored messages back and writes nothing (the same key with other messages:
        ``KeyReused``). With ``create``, a session this user does not have yet is created
        under the scope's id, in the append's transaction.
        """
        scope = policy.require_scope(scope, session=True)
        if idempotency_key is None:
            return (yield from self._append_once(scope, messages, None, create))
        b = self.backend
        request = message_request(scope.session_id, list(messages))
        receipt_of = (scope, idempotency_key)
        found = replayed((yield from step(b.get_receipt, b.aget_receipt, *receipt_of)), request)
        if found is None:
            try:
                receipt = Receipt(idempotency_key, request, {})
                return (yield from self._append_once(scope, messages, receipt, create))
            except DuplicateRequest:  # a twin of this request was stored meanwhile
                found = replayed(
                    (yield from step(b.get_receipt, b.aget_receipt, *receipt_of)), request
                )
        history = yield from step(b.get_messages, b.aget_messages, scope)
        return self._stored(scope, found, history)

    def _append_once(
        self, scope: Scope, messages: Sequence[Message], receipt: Receipt | None, create: bool
    ) -> Plan[builtins.list[Message]]:
        try:
            return (yield from self._store(scope, messages, receipt, None))
        except SessionNotFound:
            if not create:
                raise
        record = self._new_record(scope, scope.session_id)
        try:
            return (yield from self._store(scope, messages, receipt, record))
        except SessionExists:  # another request created it first
            return (yield from self._store(scope, messages, receipt, None))

    def _store(
        self,
        scope: Scope,
        messages: Sequence[Message],
        receipt: Receipt | None,
        create: SessionRecord | None,
    ) -> Plan[builtins.list[Message]]:
        b = self.backend
        now = self.clock()
        expires_at = now + self.timeout
        return (
            yield from step(
                b.append_to_session,
                b.aappend_to_session,
                scope,
                messages,
                now=now,
                expires_at=expires_at,
                create=create,
                receipt=receipt,
            )
        )

    @staticmethod
    def _stored(scope: Scope, receipt: Receipt | None, history: list[Message]) -> list[Message]:
        """The messages a stored request appended, read back from the history."""
        if receipt is None:  # stored, then purged between the two reads
            raise SessionNotFound(str(scope.session_id))
        seqs = set(receipt.seqs)
        return [m for m in history if m.seq in seqs]

    def _list(self, scope: Scope) -> Plan[builtins.list[SessionRecord]]:
        """The user's sessions, oldest first."""
        b = self.backend
        return (yield from step(b.list_sessions, b.alist_sessions, scope))

    def _expire(self, scope: Scope, session_id: str) -> Plan[None]:
        """End a session now; its messages stay until purged, the user's memory always."""
        record = yield from self._get(scope, session_id)
        b = self.backend
        now = self.clock()
        yield from step(
            b.touch_session, b.atouch_session, scope, record.id, record.last_active_at, now
        )

    def _delete(self, scope: Scope, session_id: str) -> Plan[None]:
        """Delete the session and its messages; ``SessionNotFound`` if not this user's."""
        b = self.backend
        sid = canonical_id(session_id, "session_id")
        if not (yield from step(b.delete_session, b.adelete_session, scope, sid)):
            raise SessionNotFound(session_id)

    create, acreate = twins(_create)
    get, aget = twins(_get)
    active, aactive = twins(_active)
    touch, atouch = twins(_touch)
    ensure, aensure = twins(_ensure)
    append, aappend = twins(_append)
    list, alist = twins(_list)
    expire, aexpire = twins(_expire)
    delete, adelete = twins(_delete)
