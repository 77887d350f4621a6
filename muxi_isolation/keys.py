"""API keys and their access levels.

A client key (``fmc_...``) is bound to one tenant: it may act as any user of that tenant and
never as a user of another (in MUXI a client key can claim any user id; we close that).
An admin key (``fma_...``) may do cross-user maintenance: export, forget, list.

Only SHA-256 digests of keys are kept, and a presented key is compared against every digest
in constant time. Keys are random 256-bit tokens, so a fast hash is enough.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .config import AuthConfig
from .errors import AccessDenied, ConfigError, Forbidden
from .scope import Scope, canonical_id

__all__ = ["AccessLevel", "Grant", "KeyRing", "hash_key"]


class AccessLevel(enum.Enum):
    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class Grant:
    """What a key may do: its level, and for a client key, its tenant."""

    level: AccessLevel
    tenant_id: str | None = None

    def allow(self, scope: Scope) -> Grant:
        """This grant, if it may act for ``scope``: a client key only within its tenant."""
        if self.level is AccessLevel.CLIENT and self.tenant_id != scope.tenant_id:
            raise Forbidden("this client key may not act for a user of another tenant")
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
        for admin in auth.admin_keys:
            ring.add_digest(_config_digest(admin.key, admin.sha256), Grant(AccessLevel.ADMIN))
        return ring

    def add_digest(self, sha256_hex: str, grant: Grant) -> None:
        self._grants.append((_digest(sha256_hex), grant))

    def add_client_key(self, tenant_id: str, key: str | None = None) -> str:
        """Register a client key for ``tenant_id`` (a new random one if not given)."""
        key = key or "fmc_" + secrets.token_urlsafe(32)
        tenant = Scope(tenant_id).tenant_id
        self.add_digest(hash_key(key), Grant(AccessLevel.CLIENT, tenant))
        return key

    def add_admin_key(self, key: str | None = None) -> str:
        key = key or "fma_" + secrets.token_urlsafe(32)
        self.add_digest(hash_key(key), Grant(AccessLevel.ADMIN))
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
        """Check ``key`` may act for ``scope``: a client key only within its tenant."""
        return self.identify(key).allow(scope)

    def require_admin(self, key: str | None) -> Grant:
        return self.identify(key).allow_admin()


def _config_digest(key: str | None, sha256: str | None) -> str:
    if (key is None) == (sha256 is None):
        raise ConfigError("each auth key needs exactly one of 'key' or 'sha256'")
    return hash_key(canonical_id(key, "key")) if key is not None else str(sha256).lower()
