"""The storage protocol every backend implements, with the policy wired in once.

Every public method is an operation (``operations``): a declared thing that fails closed on
a missing scope, stamps every write, validates every caller filter and verifies every
returned record, written once for the sync and the async half (``get_messages`` and
``aget_messages`` are made from one ``GetMessages``), so no backend can forget to.

A backend implements the primitives: for each operation, ``_<name>`` (``_get_messages``,
...) with the operation's ``args()``. Each receives a scope that has already been checked,
must filter by it with equality on separate tenant, user and session fields, and returns
records that carry their stored scope. A backend whose I/O is asynchronous overrides
``_aperform`` too. An operation a backend lacks is ``UnsupportedOperation``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..audit import NO_AUDIT, AuditEvent, Auditor, AuditQuery, instrument
from ..errors import UnsupportedOperation
from ..quotas import NO_LIMITS, Limits
from ._admin_ops import ForgetTenant, ForgetUser, ListMessageSessions, ListTenants, PurgeExpired
from ._checks import RECEIPT_WINDOW, SEARCH_MODES, Counts, FilterSpec, Scored
from ._graph_operations import GraphMethods
from ._memory_ops import (
    CountMemories,
    DeleteMemories,
    GetMemories,
    ListMemories,
    SearchMemories,
    UpsertMemories,
)
from ._message_ops import (
    AppendMessages,
    AppendToSession,
    CountMessages,
    DeleteMessage,
    DeleteMessages,
    GetMessages,
    ReplaceMessages,
    RestoreMessages,
    TakeOldest,
)
from ._session_ops import (
    DeleteSession,
    GetReceipt,
    GetSession,
    InsertSession,
    ListSessions,
    RenewSession,
    TouchSession,
)
from ._turn_ops import ReadTurn
from .operations import Operation, methods

__all__ = ["RECEIPT_WINDOW", "SEARCH_MODES", "Backend", "Counts", "FilterSpec", "Scored"]


class Backend(GraphMethods):
    """Sessions, chat messages and memories, each read and write scoped.

    Agent-graph checkpoints and store items (``graph.GraphMethods``) are scoped the same way.

    Memories are read at the user level; messages at the session level.

    ``limits`` (set by ``Isolation.from_config``) bounds each (tenant, user): message sizes
    are checked here before any write, counts by the backend inside the write's transaction.
    """

    limits: Limits = NO_LIMITS
    audit: Auditor = NO_AUDIT  # ``audit.Auditor``: the config's when opened from one

    # -- sessions
    insert_session, ainsert_session = methods(InsertSession.prepare)
    get_receipt, aget_receipt = methods(GetReceipt.prepare)
    get_session, aget_session = methods(GetSession.prepare)
    list_sessions, alist_sessions = methods(ListSessions.prepare)
    touch_session, atouch_session = methods(TouchSession.prepare)
    renew_session, arenew_session = methods(RenewSession.prepare)
    delete_session, adelete_session = methods(DeleteSession.prepare)

    # -- messages (scope must name a session)
    append_messages, aappend_messages = methods(AppendMessages.prepare)
    replace_messages, areplace_messages = methods(ReplaceMessages.prepare)
    append_to_session, aappend_to_session = methods(AppendToSession.prepare)
    get_messages, aget_messages = methods(GetMessages.prepare)
    count_messages, acount_messages = methods(CountMessages.prepare)
    delete_messages, adelete_messages = methods(DeleteMessages.prepare)
    delete_message, adelete_message = methods(DeleteMessage.prepare)
    take_oldest, atake_oldest = methods(TakeOldest.prepare)
    read_turn, aread_turn = methods(ReadTurn.prepare)  # the session and its history at once
    restore_messages, arestore_messages = methods(RestoreMessages.prepare)

    # -- memories (read at the user level)
    upsert_memories, aupsert_memories = methods(UpsertMemories.prepare)
    get_memories, aget_memories = methods(GetMemories.prepare)
    list_memories, alist_memories = methods(ListMemories.prepare)
    count_memories, acount_memories = methods(CountMemories.prepare)
    delete_memories, adelete_memories = methods(DeleteMemories.prepare)
    search_memories, asearch_memories = methods(SearchMemories.prepare)

    # -- maintenance (the admin's, not an end user's; tenant-wide ones on the admin path)
    forget_user, aforget_user = methods(ForgetUser.prepare)
    list_message_sessions, alist_message_sessions = methods(ListMessageSessions.prepare)
    forget_tenant, aforget_tenant = methods(ForgetTenant.prepare)
    list_tenants, alist_tenants = methods(ListTenants.prepare)
    purge_expired, apurge_expired = methods(PurgeExpired.prepare)

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    async def aclose(self) -> None:
        self.close()

    # -- how an operation reaches storage

    def _perform(self, op: Operation[Any]) -> Any:
        """Run one primitive: the backend's ``_<name>`` with the operation's arguments."""
        primitive = getattr(self, f"_{op.name}", None)
        if primitive is None:
            raise UnsupportedOperation(f"{type(self).__name__} does not support {op.name!r}")
        return primitive(*op.args())

    async def _aperform(self, op: Operation[Any]) -> Any:
        """The async half: as ``_perform`` (a backend with asynchronous I/O overrides it)."""
        return self._perform(op)

    # The audit trail (``audit``): append one event to its tenant's chain in a transaction
    # of its own; read and prune on the owner's path.

    def _append_audit(self, event: AuditEvent) -> None:
        raise NotImplementedError("_append_audit")

    async def _aappend_audit(self, event: AuditEvent) -> None:
        """The async half: as ``_append_audit`` (a backend with asynchronous I/O overrides it)."""
        self._append_audit(event)

    def _read_audit(self, query: AuditQuery) -> list[AuditEvent]:
        raise NotImplementedError("_read_audit")

    async def _aread_audit(self, query: AuditQuery) -> list[AuditEvent]:
        return self._read_audit(query)

    def _prune_audit(self, before: datetime) -> int:
        raise NotImplementedError("_prune_audit")


instrument(Backend)  # the audit hooks, on every public storage method
instrument(GraphMethods)
