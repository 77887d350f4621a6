"""Maintenance: the admin's, never wired to an end user's request.

The per-user ones act inside one user's scope (on PostgreSQL, under that user's row-level
security). The tenant-wide ones are ``TenantOperation``s: they take the backend's admin path
(the tables' owner, ``admin_url``, on PostgreSQL) and no user scope reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..scope import Scope
from ._checks import Counts, add_counts, aware, canonical_tenant
from .operations import Context, OfUser, Operation, Plan, R, perform


@dataclass(frozen=True)
class ForgetUser(OfUser[Counts]):
    """Delete every row of this (tenant, user) in every table; counts by kind."""

    name = "forget_user"
    write = True
    admin = True


@dataclass(frozen=True)
class ListMessageSessions(OfUser[list[str]]):
    """Ids of this user's sessions that hold messages, record or not (sorted)."""

    name = "list_message_sessions"


@dataclass(frozen=True)
class TenantOperation(Operation[R]):
    """Tenant-wide: on the admin path, for one tenant (or, for ``ListTenants``, all)."""

    level = "tenant"

    @property
    def scope(self) -> Scope | None:
        return None  # no user's scope: the backend enters the admin path instead


@dataclass(frozen=True)
class ForgetTenant(TenantOperation[Counts]):
    """Delete every row of one tenant in every table (admin path); counts by kind."""

    name = "forget_tenant"
    write = True
    admin = True
    tenant_id: str

    @classmethod
    def prepare(cls, tenant_id: str) -> ForgetTenant:
        return cls(canonical_tenant(tenant_id))


@dataclass(frozen=True)
class ListTenants(TenantOperation[list[str]]):
    """Every tenant holding a row in any table, sorted (admin path)."""

    name = "list_tenants"

    @classmethod
    def prepare(cls) -> ListTenants:
        return cls()


@dataclass(frozen=True)
class PurgeTenant(TenantOperation[Counts]):
    """The primitive: one tenant's sessions expired at or before ``before``, gone."""

    name = "purge_expired"
    write = True
    tenant_id: str
    before: datetime


@dataclass(frozen=True)
class PurgeExpired(TenantOperation[Counts]):
    """Delete the sessions that expired at or before ``before`` (admin path).

    Each goes whole: its record, its messages and anything else kept per session (an
    expired session can never be written again, so an empty record would only list a
    dead conversation). The users' memories stay: they outlive sessions. ``tenant_id``
    limits the purge to one tenant. Counts by kind (``sessions``, ``messages``, ...).
    """

    name = "purge_expired"
    admin = True
    before: datetime
    tenant_id: str | None

    @classmethod
    def prepare(cls, before: datetime, *, tenant_id: str | None = None) -> PurgeExpired:
        moment = aware(before)
        return cls(moment, None if tenant_id is None else canonical_tenant(tenant_id))

    def plan(self, backend: Context) -> Plan[Counts]:
        if self.tenant_id is not None:
            tenants = [self.tenant_id]
        else:
            tenants = yield from perform(backend, ListTenants())
        total: Counts = {"sessions": 0, "messages": 0}
        for tenant in tenants:
            add_counts(total, (yield from perform(backend, PurgeTenant(tenant, self.before))))
        return total
