"""Who a read or write acts for: a tenant, a user of that tenant, and maybe a session.

The canonical form of every id (tenant, user, session), applied at every entry point:

1. Unicode NFC normalization (so composed and decomposed forms are the same id);
2. then the id must be 1 to 255 characters long;
3. hold no control character (Unicode category Cc, which includes NUL), no line or
   paragraph separator, and no lone surrogate (category Cs: not text, no database can
   store it);
4. and have no leading or trailing whitespace (rejected, never silently stripped).

Ids are compared by exact string equality after this, in separate fields: never by prefix.

The ``X-Muxi-User-Id`` header ``tenant_a:user_1`` names tenant ``tenant_a`` and user
``user_1``: it is split at the first ``:``, and a tenant id may never contain ``:``, so a
header maps to exactly one (tenant, user) pair. A header without ``:`` names a user of the
default tenant; no header at all is user ``"0"`` of the default tenant (single-user mode).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidIdentifier

__all__ = [
    "DEFAULT_TENANT",
    "DEFAULT_USER",
    "MAX_ID_LENGTH",
    "Scope",
    "canonical_id",
    "known_scope",
]

DEFAULT_TENANT = "default"
DEFAULT_USER = "0"
MAX_ID_LENGTH = 255
_SEPARATORS = {"\u2028", "\u2029"}


def canonical_id(value: object, field: str = "id") -> str:
    """Return ``value`` in canonical form, or raise ``InvalidIdentifier`` naming the rule."""
    if not isinstance(value, str):
        raise InvalidIdentifier(field, f"must be a string, not {type(value).__name__}")
    text = unicodedata.normalize("NFC", value)
    if not text:
        raise InvalidIdentifier(field, "must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidIdentifier(field, f"must be at most {MAX_ID_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" or ch in _SEPARATORS for ch in text):
        raise InvalidIdentifier(field, "must not contain NUL or control characters")
    if any(unicodedata.category(ch) == "Cs" for ch in text):
        raise InvalidIdentifier(field, "must be valid Unicode (no lone surrogates)")
    if text != text.strip():
        raise InvalidIdentifier(field, "must not have leading or trailing whitespace")
    return text


def _canonical_tenant(value: object) -> str:
    tenant = canonical_id(value, "tenant_id")
    if ":" in tenant:
        raise InvalidIdentifier("tenant_id", "must not contain ':'")
    return tenant


@dataclass(frozen=True, slots=True)
class Scope:
    """An immutable (tenant, user, session) triple, validated on construction.

    Every storage call takes one. ``session_id`` is ``None`` for user-level data such as
    persistent memory; chat messages always need it.
    """

    tenant_id: str = DEFAULT_TENANT
    user_id: str = DEFAULT_USER
    session_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenant_id", _canonical_tenant(self.tenant_id))
        object.__setattr__(self, "user_id", canonical_id(self.user_id, "user_id"))
        if self.session_id is not None:
            object.__setattr__(self, "session_id", canonical_id(self.session_id, "session_id"))

    @classmethod
    def parse(cls, user_id_header: str | None = None, session_id: str | None = None) -> Scope:
        """Build a scope from an ``X-Muxi-User-Id`` value (``None`` means user ``"0"``)."""
        if user_id_header is None:
            return cls(DEFAULT_TENANT, DEFAULT_USER, session_id)
        if not isinstance(user_id_header, str):
            raise InvalidIdentifier("user_id", "must be a string")
        tenant, sep, user = user_id_header.partition(":")
        if not sep:
            return cls(DEFAULT_TENANT, user_id_header, session_id)
        return cls(tenant, user, session_id)

    @property
    def header(self) -> str:
        """The canonical ``X-Muxi-User-Id`` value; ``Scope.parse(s.header)`` gives ``s`` back."""
        if self.tenant_id == DEFAULT_TENANT and ":" not in self.user_id:
            return self.user_id
        return f"{self.tenant_id}:{self.user_id}"

    def user(self) -> Scope:
        """This scope without its session: the level of persistent memory."""
        return self if self.session_id is None else known_scope(self.tenant_id, self.user_id)

    def with_session(self, session_id: str) -> Scope:
        return known_scope(self.tenant_id, self.user_id, session_id)

    def same_user(self, other: Scope) -> bool:
        return self.tenant_id == other.tenant_id and self.user_id == other.user_id

    def __str__(self) -> str:
        base = self.header
        return base if self.session_id is None else f"{base}#{self.session_id}"


@lru_cache(maxsize=4096)
def known_scope(tenant_id: str, user_id: str, session_id: str | None = None) -> Scope:
    """``Scope(tenant_id, user_id, session_id)``, validated once per distinct triple.

    Rows read back from storage repeat the same few scopes; validating each row's ids again
    (NFC, a scan of every character) cost more than the query itself.
    """
    return Scope(tenant_id, user_id, session_id)
