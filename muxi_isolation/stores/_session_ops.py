"""Session records and idempotency receipts: one user's, each operation one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .. import policy
from ..records import Receipt, SessionRecord
from ..scope import Scope, canonical_id
from ._checks import check_session_id, fresh, stamped_receipt
from .operations import (
    Context,
    OfUser,
    Operation,
    Plan,
    R,
    UserOperation,
    Verified,
    VerifiedOne,
    perform,
)


@dataclass(frozen=True)
class InsertSession(Operation[SessionRecord]):
    """Store a new session; with a ``receipt``, in the same transaction (its key already
    stored for this user: ``DuplicateRequest``, and nothing is written)."""

    name = "insert_session"
    level = "user"
    write = True
    record: SessionRecord
    receipt: Receipt | None

    @property
    def scope(self) -> Scope | None:
        return self.record.scope

    @classmethod
    def prepare(
        cls, scope: Scope, record: SessionRecord, *, receipt: Receipt | None = None
    ) -> InsertSession:
        check_session_id(record.id)
        record = policy.stamp(scope, record)
        return cls(record, stamped_receipt(scope, receipt))

    def plan(self, backend: Context) -> Plan[SessionRecord]:
        yield from perform(backend, self)
        return self.record


@dataclass(frozen=True)
class GetReceipt(UserOperation["Receipt | None"]):
    """The user's receipt for an idempotency key, if stored within ``RECEIPT_WINDOW``."""

    name = "get_receipt"
    key: str

    @classmethod
    def prepare(cls, scope: Scope, key: str) -> GetReceipt:
        return cls(cls.owner(scope), canonical_id(key, "idempotency_key"))

    def plan(self, backend: Context) -> Plan[Receipt | None]:
        found = yield from perform(backend, self)
        return fresh(policy.verify(self.scope, [found] if found else []))


One = TypeVar("One", bound="_OneSession[Any]")


@dataclass(frozen=True)
class _OneSession(UserOperation[R]):
    """Takes one of the user's sessions by its id, and nothing else."""

    session_id: str

    @classmethod
    def prepare(cls: type[One], scope: Scope, session_id: str) -> One:
        return cls(cls.owner(scope), check_session_id(session_id))


@dataclass(frozen=True)
class GetSession(_OneSession["SessionRecord | None"], VerifiedOne[SessionRecord]):
    """The user's session record, or ``None`` (another user's id is simply missing)."""

    name = "get_session"
    audit_ids = "session_id"


@dataclass(frozen=True)
class ListSessions(OfUser[list[SessionRecord]], Verified[SessionRecord]):
    """The user's session records, oldest first."""

    name = "list_sessions"


@dataclass(frozen=True)
class TouchSession(UserOperation[bool]):
    """Record activity on the user's session: whether it exists."""

    name = "touch_session"
    write = True
    audit_ids = "session_id"
    session_id: str
    last_active_at: datetime
    expires_at: datetime

    @classmethod
    def prepare(
        cls, scope: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> TouchSession:
        return cls(cls.owner(scope), check_session_id(session_id), last_active_at, expires_at)


@dataclass(frozen=True)
class RenewSession(UserOperation["SessionRecord | None"], VerifiedOne[SessionRecord]):
    """Extend the session if it is still active at ``now``, in one transaction, and
    return it as renewed; ``None`` if this user has no such active session."""

    name = "renew_session"
    write = True
    audit_ids = "session_id"
    session_id: str
    now: datetime
    expires_at: datetime

    @classmethod
    def prepare(
        cls, scope: Scope, session_id: str, *, now: datetime, expires_at: datetime
    ) -> RenewSession:
        return cls(cls.owner(scope), check_session_id(session_id), now, expires_at)


@dataclass(frozen=True)
class DeleteSession(_OneSession[bool]):
    """Delete a session record and its messages; the user's memories stay."""

    name = "delete_session"
    write = True
    audit_ids = "session_id"
