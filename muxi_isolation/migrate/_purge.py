"""The retention of expired sessions: ``memory.expired_session_retention`` seconds.

A session expires after ``session_timeout`` idle seconds; its history stays readable (an
app may show it) until the retention has also passed, then ``purge_expired`` deletes the
session whole: its record, its messages, anything else kept per session. The user's
persistent memory is never touched ("Memory Persists"). With no retention configured,
expired sessions are kept (the seed's behaviour) and a purge deletes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..config import Config
from ..errors import InvalidInput
from ..plans import Plan, step, twins
from ..sessions import Clock, utc_now
from ..stores.base import Backend
from ._codec import iso

__all__ = ["PurgeReport", "apurge_expired", "purge_expired", "retention_cutoff"]


@dataclass(frozen=True)
class PurgeReport:
    """Sessions that expired at or before ``before`` are gone; ``None``: nothing to do."""

    before: datetime | None
    tenant_id: str | None
    deleted: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"before": iso(self.before), "tenant_id": self.tenant_id, "deleted": self.deleted}

    def format(self) -> str:
        if self.before is None:
            return "expired sessions are kept: memory.expired_session_retention is not set"
        where = f" of tenant {self.tenant_id}" if self.tenant_id else ""
        counts = ", ".join(f"{n} {kind}" for kind, n in self.deleted.items())
        return f"purged sessions{where} expired at or before {iso(self.before)}: {counts}"


def retention_cutoff(retention: float | Config | None, now: datetime) -> datetime | None:
    """The expiry time at or before which sessions go; ``None`` when they are kept."""
    if isinstance(retention, Config):
        retention = retention.memory.expired_session_retention
    if retention is None:
        return None
    if not retention >= 0:  # NaN too
        raise InvalidInput("the retention must be zero or more seconds", field="retention")
    try:
        return now - timedelta(seconds=retention)
    except OverflowError:
        raise InvalidInput("the retention reaches before year 1", field="retention") from None


def _purge_expired(
    backend: Backend,
    retention: float | Config | None,
    *,
    tenant_id: str | None = None,
    clock: Clock = utc_now,
) -> Plan[PurgeReport]:
    """Delete the sessions whose retention has passed (every tenant, or one)."""
    before = retention_cutoff(retention, clock())
    if before is None:
        return PurgeReport(None, tenant_id, {})
    deleted = yield from step(
        backend.purge_expired, backend.apurge_expired, before, tenant_id=tenant_id
    )
    return PurgeReport(before, tenant_id, deleted)


purge_expired, apurge_expired = twins(_purge_expired)
