"""Chat messages: one session's (the scope must name it), each operation one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .. import policy
from .._input import check_int
from ..errors import InvalidInput
from ..quotas import check_messages
from ..records import Message, Receipt, SessionRecord
from ..scope import Scope
from ._checks import (
    check_k,
    check_message,
    check_seqs,
    check_session_id,
    check_status,
    check_window,
    stamped_receipt,
)
from .operations import Context, Plan, SessionOperation, Verified, VerifiedOne


def _stamped(scope: Scope, messages: Sequence[Message]) -> tuple[Message, ...]:
    return tuple(policy.stamp(scope, check_message(m)) for m in messages)


@dataclass(frozen=True)
class _Write(SessionOperation[list[Message]], Verified[Message]):
    """Stamped messages written to the scope's session; the stored ones come back verified."""

    write = True
    messages: tuple[Message, ...]

    @classmethod
    def prepare(cls, scope: Scope, messages: Sequence[Message]) -> _Write:
        scope = cls.owner(scope)
        return cls(scope, _stamped(scope, messages))

    def plan(self, backend: Context) -> Plan[list[Message]]:
        check_messages(backend.limits, self.scope.tenant_id, self.messages)
        return (yield from super().plan(backend))

    def args(self) -> tuple[object, ...]:
        return (self.scope, list(self.messages), *super().args()[2:])


@dataclass(frozen=True)
class AppendMessages(_Write):
    """Append in one transaction (all or nothing); returns them with ``seq`` set."""

    name = "append_messages"

    def plan(self, backend: Context) -> Plan[list[Message]]:
        if not self.messages:
            return []
        return (yield from super().plan(backend))


@dataclass(frozen=True)
class ReplaceMessages(_Write):
    """Delete the session's messages and write these instead, in one transaction."""

    name = "replace_messages"


@dataclass(frozen=True)
class RestoreMessages(_Write):
    """Replace the session's messages with these as they were: ``seq``, ``status`` and
    ``created_at`` kept (imports, restores). One transaction.

    Every message needs a distinct positive ``seq``; the session's counter moves past
    the highest, so a later append never reuses one.
    """

    name = "restore_messages"
    admin = True

    @classmethod
    def prepare(cls, scope: Scope, messages: Sequence[Message]) -> _Write:
        scope = cls.owner(scope)
        return cls(scope, _stamped(scope, check_seqs(messages)))


@dataclass(frozen=True)
class AppendToSession(_Write):
    """Append to a session that is active at ``now`` and push its expiry to
    ``expires_at``, in one transaction: a session deleted, expired or purged while the
    caller was busy gets nothing. ``SessionNotFound`` or ``SessionExpired`` otherwise.

    ``create``: the scope's session, new, stored first in the same transaction.
    ``receipt``: stored in the same transaction (``DuplicateRequest`` if its key is).
    """

    name = "append_to_session"
    now: datetime
    expires_at: datetime
    create: SessionRecord | None
    receipt: Receipt | None

    @classmethod
    def prepare(  # type: ignore[override]
        cls,
        scope: Scope,
        messages: Sequence[Message],
        *,
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None = None,
        receipt: Receipt | None = None,
    ) -> AppendToSession:
        scope = cls.owner(scope)
        stamped = _stamped(scope, messages)
        if create is not None:
            if check_session_id(create.id) != scope.session_id:
                raise InvalidInput("create must be the scope's own session", field="create")
            create = policy.stamp(scope, create)
        return cls(scope, stamped, now, expires_at, create, stamped_receipt(scope, receipt))


@dataclass(frozen=True)
class GetMessages(SessionOperation[list[Message]], Verified[Message]):
    """Messages oldest first; ``last=N`` gives the newest N, still oldest first."""

    name = "get_messages"
    status: str | None
    limit: int | None
    offset: int | None
    last: int | None

    @classmethod
    def prepare(
        cls,
        scope: Scope,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        last: int | None = None,
    ) -> GetMessages:
        scope = cls.owner(scope)
        check_window(limit, offset, last)
        check_status(status)
        return cls(scope, status, limit, offset, last)


@dataclass(frozen=True)
class CountMessages(SessionOperation[int]):
    """How many messages the session holds (with ``status``: of that status)."""

    name = "count_messages"
    status: str | None

    @classmethod
    def prepare(cls, scope: Scope, *, status: str | None = None) -> CountMessages:
        check_status(status)
        return cls(cls.owner(scope), status)


@dataclass(frozen=True)
class DeleteMessages(CountMessages):
    """Delete the session's messages (with ``status``: of that status); how many went."""

    name = "delete_messages"
    write = True


@dataclass(frozen=True)
class DeleteMessage(SessionOperation["Message | None"], VerifiedOne[Message]):
    """Delete one message of the session by its ``seq``; the message, or ``None``."""

    name = "delete_message"
    write = True
    seq: int

    @classmethod
    def prepare(cls, scope: Scope, seq: int) -> DeleteMessage:
        check_int(seq, "seq")
        return cls(cls.owner(scope), seq)


@dataclass(frozen=True)
class TakeOldest(SessionOperation[list[Message]], Verified[Message]):
    """Remove the oldest ``n`` active messages (or mark them archived); return them."""

    name = "take_oldest"
    write = True
    n: int
    archive: bool

    @classmethod
    def prepare(cls, scope: Scope, n: int, *, archive: bool) -> TakeOldest:
        check_k(n, "n")
        return cls(cls.owner(scope), n, archive)
