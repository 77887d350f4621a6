"""Reading, verifying and pruning a backend's stored trail (the admin's)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._events import OK, AuditEvent, AuditQuery, ChainBreak, verify_chain

if TYPE_CHECKING:
    from ..stores.base import Backend

__all__ = ["aread_events", "heads", "prune", "read_events", "verify"]


# -- reading, verifying and pruning a backend's trail (the admin's) -------------------------


def read_events(backend: Backend, query: AuditQuery | None = None) -> list[AuditEvent]:
    """The backend's stored events matching ``query``, oldest first (its owner's path)."""
    return backend._read_audit(query or AuditQuery())


async def aread_events(backend: Backend, query: AuditQuery | None = None) -> list[AuditEvent]:
    return await backend._aread_audit(query or AuditQuery())


def verify(backend: Backend, tenant_id: str | None = None) -> list[ChainBreak]:
    """Every break in the backend's chains (one tenant's with ``tenant_id``)."""
    return verify_chain(read_events(backend, AuditQuery(tenant_id=tenant_id)))


def heads(backend: Backend) -> dict[str, dict[str, Any]]:
    """Each chain's newest ``seq`` and ``hash``: keep them elsewhere to detect a truncation."""
    last: dict[str, AuditEvent] = {}
    for event in read_events(backend):
        key = event.tenant_id or ""
        if key not in last or (event.seq or 0) > (last[key].seq or 0):
            last[key] = event
    return {k: {"seq": e.seq, "hash": e.hash} for k, e in sorted(last.items())}


def prune(backend: Backend, now: datetime | None = None) -> int:
    """Delete the events older than the retention (the oldest of each chain); how many.
    Recorded as an event of its own."""
    retention = backend.audit.retention
    if retention is None:
        return 0
    before = (now or datetime.now(timezone.utc)) - retention
    gone = backend._prune_audit(before)
    backend.audit.record("audit_prune", OK, None, [before.isoformat()])
    return gone
