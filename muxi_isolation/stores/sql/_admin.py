"""The admin path (tenant-wide): as the owner (``admin_url``) on PostgreSQL. Forgetting a
tenant drops its users' own HNSW indexes too; purging runs in short batches."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from ..base import Counts
from ..operations import Operation
from ._ann_index import AnnIndexes
from ._install import Installing
from ._transactions import EVERY_TENANT

__all__ = ["PURGE_BATCH", "AdminPath", "admin_tenant"]

PURGE_BATCH = 500  # expired sessions per purge transaction


def admin_tenant(op: Operation[Any]) -> str | None:
    """The tenant a tenant-wide operation acts on, on the admin path (``None``: a user's)."""
    if op.level != "tenant":
        return None
    return getattr(op, "tenant_id", None) or EVERY_TENANT


class AdminPath(Installing):
    """Forget a tenant, purge expired sessions: more than one transaction each."""

    _ann: AnnIndexes

    def _forget_tenant(self, tenant_id: str) -> Counts:
        users = self._tenant_users(tenant_id)
        counts = self._run(
            None, self._ops.forget_tenant, tenant_id, write=True, admin_tenant=tenant_id
        )
        self._ann.drop(self._owner(), tenant_id, users)
        self._fold_log()
        return counts

    async def _aforget_tenant(self, tenant_id: str) -> Counts:
        users = await asyncio.to_thread(self._tenant_users, tenant_id)
        counts = await self._arun(
            None, self._ops.forget_tenant, tenant_id, write=True, admin_tenant=tenant_id
        )
        await asyncio.to_thread(self._ann.drop, self._owner(), tenant_id, users)
        await asyncio.to_thread(self._fold_log)
        return counts

    def _tenant_users(self, tenant_id: str) -> list[str]:
        """Whose HNSW index a tenant's forgetting drops (read before the rows go)."""
        if not self._ann.applies():
            return []
        return self._run(None, self._ann.tenant_users, tenant_id, admin_tenant=tenant_id)

    def _purge_expired(self, tenant_id: str, before: datetime) -> Counts:
        total: Counts = {}
        while True:  # one short transaction per batch of sessions
            counts, n = self._run(
                None,
                self._ops.purge_expired,
                tenant_id,
                before,
                PURGE_BATCH,
                write=True,
                admin_tenant=tenant_id,
            )
            _add(total, counts)
            if n < PURGE_BATCH:
                self._fold_log()
                return total

    async def _apurge_expired(self, tenant_id: str, before: datetime) -> Counts:
        total: Counts = {}
        while True:
            counts, n = await self._arun(
                None,
                self._ops.purge_expired,
                tenant_id,
                before,
                PURGE_BATCH,
                write=True,
                admin_tenant=tenant_id,
            )
            _add(total, counts)
            if n < PURGE_BATCH:
                await asyncio.to_thread(self._fold_log)
                return total


def _add(total: Counts, more: Counts) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
