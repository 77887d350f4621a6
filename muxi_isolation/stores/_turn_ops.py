"""What a chat turn reads before its agent runs: the session and its newest messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .. import policy
from ..errors import SessionExpired, SessionNotFound
from ..records import Message, SessionRecord
from ..scope import Scope
from ._checks import check_k, check_session_id
from .operations import Context, Plan, UserOperation, perform


@dataclass(frozen=True)
class ReadTurn(UserOperation["tuple[SessionRecord, list[Message]]"]):
    """The user's session, if it is active at ``now``, and its newest ``last`` messages
    (oldest first), read together in one transaction. ``SessionNotFound`` (another user's
    id too) or ``SessionExpired``, as ``SessionManager.active`` gives them.

    ``now=None`` answers an expired session too and ``last=None`` every message, as
    ``SessionManager.get`` and ``get_messages`` would, in one read (``GET /v1/sessions``)."""

    name = "read_turn"
    audit_ids = "session_id"
    session_id: str
    now: datetime | None
    last: int | None

    @classmethod
    def prepare(
        cls, scope: Scope, session_id: str, *, now: datetime | None, last: int | None
    ) -> ReadTurn:
        if last is not None:
            check_k(last, "last")
        return cls(cls.owner(scope), check_session_id(session_id), now, last)

    def args(self) -> tuple[object, ...]:
        """The primitive's: ``now`` is not one (the expiry is decided here, once)."""
        return (self.scope, self.session_id, self.last)

    def plan(self, backend: Context) -> Plan[tuple[SessionRecord, list[Message]]]:
        found, messages = yield from perform(backend, self)
        record = next(iter(policy.verify(self.scope, [found] if found else [])), None)
        if record is None or record.id != self.session_id:
            raise SessionNotFound(self.session_id)
        if self.now is not None and record.expired(self.now):
            raise SessionExpired(self.session_id)
        return record, policy.verify(self.scope.with_session(record.id), messages)
