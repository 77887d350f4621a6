"""API keys and their access levels.

A client key (``fmc_...``) is bound to one tenant: it may act as any user of that tenant and
never as a user of another (in MUXI a client key can claim any user id; we close that).
An admin key (``fma_...``) may do cross-user maintenance: export, forget, list; and nothing
more. It acts as a user (reads her sessions, writes into her memory) only when the config
says so (``auth.admin_impersonation: true``), and the HTTP edge then logs every such request.

Only SHA-256 digests of keys are kept, and a presented key is compared against every digest
in constant time. Keys are random 256-bit tokens, so a fast hash is enough.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace

from .config import AuthConfig
from .errors import AccessDenied, ConfigError, Forbidden
from .scope import Scope, canonical_id

__all__ = ["AccessLevel", "Grant", "KeyRing", "hash_key"]


class AccessLevel(enum.Enum):
    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class Grant:
    """What a key may do: its level; for a client key, its tenant; for an admin key,
    whether it may also act as a user. ``key_id`` names the key in logs (a prefix of its
    SHA-256, never the key)."""

    level: AccessLevel
    tenant_id: str | None = None
    impersonate: bool = False
    key_id: str | None = field(default=None, compare=False)

    def allow(self, scope: Scope) -> Grant:
        """This grant, if it may act for ``scope``: a client key only within its tenant, an
        admin key only when impersonation is switched on."""
        if self.level is AccessLevel.CLIENT and self.tenant_id != scope.tenant_id:
            raise Forbidden("this client key may not act for a user of another tenant")
        if self.level is AccessLevel.ADMIN and not self.impersonate:
            raise Forbidden(
                "an admin key may only call the admin endpoints; acting as a user needs "
                "auth.admin_impersonation: true"
            )
        return self

    def allow_admin(self) -> Grant:
        if self.level is not AccessLevel.ADMIN:
            raise Forbidden("this call needs an admin key")
        return self


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _digest(hex_digest: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_digest)
    except ValueError as exc:
        raise ConfigError("a key's sha256 must be 64 hex digits") from exc
    if len(raw) != 32:
        raise ConfigError("a key's sha256 must be 64 hex digits")
    return raw


class KeyRing:
    """The keys a server accepts."""

    def __init__(self) -> None:
        self._grants: list[tuple[bytes, Grant]] = []

    @classmethod
    def from_config(cls, auth: AuthConfig) -> KeyRing:
        ring = cls()
        for client in auth.client_keys:
            grant = Grant(AccessLevel.CLIENT, Scope(client.tenant).tenant_id)
            ring.add_digest(_config_digest(client.key, client.sha256), grant)
        admin_grant = Grant(AccessLevel.ADMIN, impersonate=auth.admin_impersonation)
        for admin in auth.admin_keys:
            ring.add_digest(_config_digest(admin.key, admin.sha256), admin_grant)
        return ring

    def add_digest(self, sha256_hex: str, grant: Grant) -> None:
        digest = _digest(sha256_hex)
        self._grants.append((digest, replace(grant, key_id="sha256:" + digest.hex()[:12])))

    def add_client_key(self, tenant_id: str, key: str | None = None) -> str:
        """Register a client key for ``tenant_id`` (a new random one if not given)."""
        key = key or "fmc_" + secrets.token_urlsafe(32)
        tenant = Scope(tenant_id).tenant_id
        self.add_digest(hash_key(key), Grant(AccessLevel.CLIENT, tenant))
        return key

    def add_admin_key(self, key: str | None = None, *, impersonate: bool = False) -> str:
        """Register an admin key (a new random one if not given); ``impersonate`` lets it
        act as any user on user routes too (logged at the HTTP edge)."""
        key = key or "fma_" + secrets.token_urlsafe(32)
        self.add_digest(hash_key(key), Grant(AccessLevel.ADMIN, impersonate=impersonate))
        return key

    def __len__(self) -> int:
        return len(self._grants)

    def identify(self, key: str | None) -> Grant:
        """The grant of ``key``; ``AccessDenied`` if it is missing or unknown."""
        if not key:
            raise AccessDenied("missing API key")
        presented = hashlib.sha256(key.encode()).digest()
        found: Grant | None = None
        for digest, grant in self._grants:  # no early exit: constant time over the ring
            if hmac.compare_digest(digest, presented):
                found = grant
        if found is None:
            raise AccessDenied("unknown API key")
        return found

    def authorize(self, key: str | None, scope: Scope) -> Grant:
        """Check ``key`` may act for ``scope``: a client key only within its tenant, an admin
        key only with impersonation switched on."""
        return self.identify(key).allow(scope)

    def require_admin(self, key: str | None) -> Grant:
        return self.identify(key).allow_admin()


def _config_digest(key: str | None, sha256: str | None) -> str:
    if (key is None) == (sha256 is None):
        raise ConfigError("each auth key needs exactly one of 'key' or 'sha256'")
    return hash_key(canonical_id(key, "key")) if key is not None else str(sha256).lower()
