"""The admin path (tenant-wide): as the owner (``admin_url``) on PostgreSQL. Forgetting a
tenant drops its users' own HNSW indexes too; purging runs in short batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from ...plans import Plan, Step, in_thread, step, twins
from .._checks import add_counts
from ..base import Counts
from ..operations import Operation
from ._ann_index import AnnIndexes
from ._install import Installing
from ._transactions import EVERY_TENANT, Call

__all__ = ["PURGE_BATCH", "AdminPath", "admin_tenant"]

T = TypeVar("T")
PURGE_BATCH = 500  # expired sessions per purge transaction


def admin_tenant(op: Operation[Any]) -> str | None:
    """The tenant a tenant-wide operation acts on, on the admin path (``None``: a user's)."""
    if op.level != "tenant":
        return None
    return getattr(op, "tenant_id", None) or EVERY_TENANT


class AdminPath(Installing):
    """Forget a tenant, purge expired sessions: more than one transaction each."""

    _ann: AnnIndexes

    # Each sync/async pair runs one plan (``plans``): the blocking steps without an async
    # engine (the index drop, the SQLite log, the user list) run in a thread on the async half.

    def _forget_tenant_steps(self, tenant_id: str) -> Plan[Counts]:
        users = yield from step(self._tenant_users, in_thread(self._tenant_users), tenant_id)
        counts = yield from self._as_admin(tenant_id, self._ops.forget_tenant, tenant_id)
        yield from step(self._ann.drop, in_thread(self._ann.drop), self._owner(), tenant_id, users)
        yield from step(self._fold_log, in_thread(self._fold_log))
        return counts

    def _as_admin(self, tenant_id: str, fn: Callable[..., T], *args: Any) -> Plan[T]:
        """``fn(conn, *args)`` in one write transaction on the tenant's admin path."""
        call = Call(None, fn, args, write=True, admin_tenant=tenant_id)
        answer: T = yield Step(self._run, self._arun, (call,), {})
        return answer

    def _tenant_users(self, tenant_id: str) -> list[str]:
        """Whose HNSW index a tenant's forgetting drops (read before the rows go)."""
        if not self._ann.applies():
            return []
        return self._run(Call(None, self._ann.tenant_users, (tenant_id,), admin_tenant=tenant_id))

    def _purge_expired_steps(self, tenant_id: str, before: datetime) -> Plan[Counts]:
        total: Counts = {}
        while True:  # one short transaction per batch of sessions
            purge = self._ops.purge_expired
            counts, n = yield from self._as_admin(tenant_id, purge, tenant_id, before, PURGE_BATCH)
            add_counts(total, counts)
            if n < PURGE_BATCH:
                yield from step(self._fold_log, in_thread(self._fold_log))
                return total

    _forget_tenant, _aforget_tenant = twins(_forget_tenant_steps, "_forget_tenant")
    _purge_expired, _apurge_expired = twins(_purge_expired_steps, "_purge_expired")
