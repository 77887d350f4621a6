"""Forget a user, or a whole tenant: every row, in every table, counted.

The backend deletes from each scoped table in one transaction (the SQL backend walks its
list of scoped tables, so a table added later is covered without touching this), session
records and message counters included; nothing keeps an old copy (mem0's delete kept the
text in a history table). On SQLite, freed pages are zeroed and the write-ahead log folded
back, so the text is not left in the database files either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import policy
from ..scope import Scope
from ..stores.base import Backend

__all__ = ["ForgetReport", "aforget_tenant", "aforget_user", "forget_tenant", "forget_user"]


@dataclass(frozen=True)
class ForgetReport:
    """Who was forgotten and how many rows of each kind went."""

    target: Scope | str  # a user's Scope, or a tenant id
    deleted: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.target, Scope):
            return {"user_id": self.target.header, "deleted": self.deleted}
        return {"tenant_id": self.target, "deleted": self.deleted}

    def format(self) -> str:
        who = (
            f"user {self.target.header}"
            if isinstance(self.target, Scope)
            else f"tenant {self.target}"
        )
        counts = ", ".join(f"{n} {kind}" for kind, n in self.deleted.items())
        return f"forgot {who}: {counts or 'nothing stored'}"


def _user(user: Scope | str) -> Scope:
    return Scope.parse(user) if isinstance(user, str) else policy.require_scope(user).user()


def forget_user(backend: Backend, user: Scope | str) -> ForgetReport:
    """Delete every row of ``user`` (a Scope or ``"tenant_a:user_1"``) everywhere."""
    who = _user(user)
    return ForgetReport(who, backend.forget_user(who))


async def aforget_user(backend: Backend, user: Scope | str) -> ForgetReport:
    who = _user(user)
    return ForgetReport(who, await backend.aforget_user(who))


def forget_tenant(backend: Backend, tenant_id: str) -> ForgetReport:
    """Delete every row of every user of one tenant (the backend's admin path)."""
    tenant = Scope(tenant_id).tenant_id
    return ForgetReport(tenant, backend.forget_tenant(tenant))


async def aforget_tenant(backend: Backend, tenant_id: str) -> ForgetReport:
    tenant = Scope(tenant_id).tenant_id
    return ForgetReport(tenant, await backend.aforget_tenant(tenant))
