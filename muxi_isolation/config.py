"""Configuration: the seed's ``memory:`` YAML, verbatim, as a strict pydantic model.

    memory:
      persistent:
        enabled: true
        provider: postgresql            # or sqlite (the embedded default), or memory
        connection_string: ${{ secrets.POSTGRES_URI }}
        admin_connection_string: ${{ secrets.POSTGRES_OWNER_URI }}  # optional: the owner,
                                        # for tenant-wide maintenance (forget a tenant, purge)
        user_isolation: true
        embedding_dimension: auto       # or a number; "auto": the first vector written fixes it
        embedding_precision: full       # or half: PostgreSQL HALFVEC (float16), half the size
      session_timeout: 3600             # idle seconds before a session expires
      expired_session_retention: 86400  # optional: seconds an expired session's history is
                                        # kept before ``purge-expired`` deletes it (unset: kept)
    auth:                               # optional: API keys for the HTTP edge
      client_keys:
        - tenant: tenant_a
          key: ${{ secrets.TENANT_A_KEY }}     # or sha256: <hex digest of the key>
      admin_keys:
        - key: ${{ secrets.ADMIN_KEY }}
      admin_impersonation: false        # true: admin keys may also act as any user on user
                                        # routes (each such request is logged); off: 403
    limits:                             # optional, per (tenant, user); unset: no limit
      requests_per_minute: 600          # HTTP edge (429 with Retry-After)
      max_sessions_per_user: 1000
      max_memories_per_user: 100000
      max_message_bytes: 65536          # each message's content as stored (UTF-8 JSON)
      tenants:                          # per-tenant overrides of the keys above
        tenant_a: {max_memories_per_user: 1000}
    audit:                              # the audit trail (``audit``); these are the defaults
      enabled: true
      sink: database                    # the backend's own table | log (JSON lines) | none
      reads: false                      # also record every read (and ``writes``: every write)
      retention_days: 365               # ``muxi-isolation audit prune`` deletes older events

``${{ secrets.NAME }}`` is replaced from the given mapping, else the environment; a missing
one is an error naming it. Unknown keys are errors too, so a typo never silently falls back
to a default. ``user_isolation: false`` is refused: this library always isolates users.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, MissingSecret

__all__ = [
    "AdminKeyConfig",
    "AuditConfig",
    "AuthConfig",
    "ClientKeyConfig",
    "Config",
    "LimitsConfig",
    "MemoryConfig",
    "PersistentConfig",
    "ServerConfig",
    "load_config",
    "resolve_secrets",
]

DEFAULT_SQLITE_URL = "sqlite:///muxi_memory.db"
_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersistentConfig(_Strict):
    enabled: bool = True
    provider: Literal["sqlite", "postgresql", "memory"] = "sqlite"
    connection_string: str | None = None
    admin_connection_string: str | None = None
    user_isolation: bool = True
    # "auto": the first vector written fixes it (and it is recorded); a number fixes it now
    embedding_dimension: Annotated[int, Field(ge=1, le=16000)] | Literal["auto"] = "auto"
    # "half": PostgreSQL stores HALFVEC (float16); SQLite and the in-memory store have no such type
    embedding_precision: Literal["full", "half"] = "full"

    @field_validator("user_isolation")
    @classmethod
    def _always_isolated(cls, value: bool) -> bool:
        if not value:
            raise ValueError("muxi-isolation always isolates users; remove user_isolation: false")
        return value

    @model_validator(mode="after")
    def _half_needs_postgresql(self) -> PersistentConfig:
        if self.embedding_precision == "half" and (
            not self.enabled or self.provider != "postgresql"
        ):
            raise ValueError(
                "embedding_precision: half is for provider: postgresql (pgvector's halfvec); "
                "SQLite and the in-memory store keep float32 vectors"
            )
        return self

    @property
    def url(self) -> str:
        """The storage URL this configuration names."""
        if not self.enabled or self.provider == "memory":
            return "memory://"
        if self.connection_string:
            return self.connection_string
        if self.provider == "postgresql":
            raise ConfigError("memory.persistent.connection_string is required for postgresql")
        return DEFAULT_SQLITE_URL


class MemoryConfig(_Strict):
    persistent: PersistentConfig = PersistentConfig()
    session_timeout: int = Field(default=3600, gt=0)
    expired_session_retention: int | None = Field(default=None, ge=0, strict=True)


class ClientKeyConfig(_Strict):
    tenant: str
    key: str | None = None
    sha256: str | None = None


class AdminKeyConfig(_Strict):
    key: str | None = None
    sha256: str | None = None


class AuthConfig(_Strict):
    client_keys: list[ClientKeyConfig] = []
    admin_keys: list[AdminKeyConfig] = []
    require_user_header: bool = False
    admin_impersonation: bool = Field(default=False, strict=True)  # "yes" is not a yes


class ServerConfig(_Strict):
    request_timeout: float = Field(default=5.0, gt=0, le=3600)  # seconds, down to the database


_Limit = Annotated[int, Field(ge=0, strict=True)] | None


class TenantLimitsConfig(_Strict):
    requests_per_minute: _Limit = None
    max_sessions_per_user: _Limit = None
    max_memories_per_user: _Limit = None
    max_message_bytes: _Limit = None


class LimitsConfig(TenantLimitsConfig):
    """Per-(tenant, user) quotas (``quotas.Limits``); a tenant's entry overrides its keys."""

    tenants: dict[str, TenantLimitsConfig] = {}


class AuditConfig(_Strict):
    """The audit trail (``audit.Auditor``): refusals and admin acts by default."""

    enabled: bool = Field(default=True, strict=True)
    sink: Literal["database", "log", "none"] = "database"
    reads: bool = Field(default=False, strict=True)
    writes: bool = Field(default=False, strict=True)
    retention_days: int | None = Field(default=365, ge=1, strict=True)  # None: kept forever


class Config(_Strict):
    memory: MemoryConfig = MemoryConfig()
    auth: AuthConfig = AuthConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    audit: AuditConfig = AuditConfig()


def resolve_secrets(data: Any, secrets: Mapping[str, str] | None = None) -> Any:
    """``data`` with every ``${{ secrets.NAME }}`` replaced; ``MissingSecret`` names a gap."""
    if isinstance(data, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            value = (secrets or {}).get(name, os.environ.get(name))
            if value is None:
                raise MissingSecret(name)
            return value

        return _SECRET.sub(lookup, data)
    if isinstance(data, Mapping):
        return {key: resolve_secrets(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [resolve_secrets(item, secrets) for item in data]
    return data


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> Config:
    """Load a config from a YAML file path, YAML text, or a dict; ``None`` is all defaults.

    Raises:
        ConfigError: the YAML does not parse or does not validate (the message names the key).
        MissingSecret: a referenced secret has no value.
    """
    if source is None:
        return Config()
    if isinstance(source, Mapping):
        raw: Any = source
    else:
        try:
            is_path = isinstance(source, Path) or ("\n" not in source and Path(source).is_file())
            text = Path(source).read_text() if is_path else str(source)
            raw = yaml.safe_load(text) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config is not valid YAML: {exc}") from exc
    if isinstance(raw, str) and isinstance(source, str) and "\n" not in source:
        raise ConfigError(f"no such config file: {source}")
    if not isinstance(raw, Mapping):
        raise ConfigError("config must be a YAML mapping, or the path of a YAML file")
    try:
        return Config.model_validate(resolve_secrets(raw, secrets))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from exc
