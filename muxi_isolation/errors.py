"""The exceptions of muxi-isolation: one root, so an app can catch everything we raise.

    IsolationError
    ├── InvalidInput             a value no backend can take (HTTP 400); ``field`` names it
    │   ├── InvalidIdentifier    a tenant, user or session id breaks the canonical form
    │   ├── InvalidFilter        a metadata filter that does not parse
    │   └── KeyReused            an idempotency key sent again with another request
    ├── MissingScope             a call arrived without a scope: we fail closed
    ├── ScopeViolation           input tries to reach outside its scope
    │   └── ReservedKey          a caller's metadata or filter names a reserved scope key
    ├── SessionError
    │   ├── SessionNotFound      unknown id, or another user's id (the same message)
    │   ├── SessionExists        this user already has a session with that id
    │   └── SessionExpired       the session's idle timeout has passed
    ├── AccessDenied             a missing or wrong API key (HTTP 401)
    │   └── Forbidden            a valid key acting beyond its level (HTTP 403)
    ├── ConfigError              invalid configuration
    │   └── MissingSecret        a ${{ secrets.NAME }} with no value
    ├── DuplicateRequest         a request whose idempotency key is already stored
    ├── QuotaExceeded            a per-(tenant, user) limit refused the call (HTTP 429)
    ├── StorageError             the database failed; the driver error is chained
    │   ├── StorageUnavailable   the database cannot be reached
    │   │   └── DeadlineExceeded the call's deadline passed; what it wrote is rolled back
    │   └── UnsupportedOperation the backend does not implement this operation
    ├── AdapterUnavailable       an optional framework is not installed
    ├── UnsupportedStore         a foreign store the adapters cannot scope safely
    └── UnreadableSource         an import source (table, file) that cannot be read

Errors about bad input also subclass ``ValueError`` or ``LookupError`` where that is
what a caller would naturally catch.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDenied",
    "AdapterUnavailable",
    "ConfigError",
    "DeadlineExceeded",
    "DuplicateRequest",
    "Forbidden",
    "InvalidFilter",
    "InvalidIdentifier",
    "InvalidInput",
    "IsolationError",
    "KeyReused",
    "MissingScope",
    "MissingSecret",
    "QuotaExceeded",
    "ReservedKey",
    "ScopeViolation",
    "SessionError",
    "SessionExists",
    "SessionExpired",
    "SessionNotFound",
    "StorageError",
    "StorageUnavailable",
    "UnreadableSource",
    "UnsupportedOperation",
    "UnsupportedStore",
]


class IsolationError(Exception):
    """Root of every exception this library raises."""


class InvalidInput(IsolationError, ValueError):
    """A value the library refuses before anything is written or read: text a database
    cannot hold (NUL, a lone surrogate), NaN, an integer beyond 64 bits, a negative limit.

    The same input is refused the same way on every backend. ``field`` names the input
    (``message``, ``metadata``, ``limit``...) when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidIdentifier(InvalidInput):
    """A tenant, user or session id that breaks a rule of the canonical form.

    ``field`` names the id (``tenant_id``, ``user_id``, ``session_id``) and ``rule`` the
    rule it broke, so callers can report it without parsing the message.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"invalid {field}: {rule}", field=field)
        self.rule = rule


class MissingScope(IsolationError):
    """A read or write without a scope. We never fall back to "everything"."""


class ScopeViolation(IsolationError, ValueError):
    """Input that tries to read or write outside the scope it was given."""


class ReservedKey(ScopeViolation):
    """A caller's metadata or filter names a key that only the library may set."""


class InvalidFilter(InvalidInput):
    """A metadata filter that does not follow the documented dialect."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="filter")


class KeyReused(InvalidInput):
    """An idempotency key this user already sent with another request (HTTP 422)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was used for another request", field="Idempotency-Key"
        )
        self.key = key


class DuplicateRequest(IsolationError):
    """A request whose idempotency key this user already stored: nothing was written, and
    the stored answer (``Backend.get_receipt``) is the one to give back."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a request with idempotency key {key!r} is already stored")
        self.key = key


class QuotaExceeded(IsolationError):
    """A per-(tenant, user) limit refused the call; nothing of it was written.

    ``limit`` names the limit (``max_sessions_per_user``, ``max_memories_per_user``,
    ``max_message_bytes``, ``requests_per_minute``) and ``allowed`` its value;
    ``retry_after`` (seconds) is set for the rate limit, which frees up with time.
    """

    def __init__(self, limit: str, allowed: int, *, retry_after: int | None = None) -> None:
        super().__init__(f"quota exceeded: {limit} is {allowed}")
        self.limit = limit
        self.allowed = allowed
        self.retry_after = retry_after


class SessionError(IsolationError):
    """A problem with a session."""


class _OneSession(SessionError):
    """A problem with one session, named by ``session_id``; the class says which problem."""

    _problem: ClassVar[str]

    def __init__(self, session_id: str) -> None:
        super().__init__(f"{self._problem}: {session_id!r}")
        self.session_id = session_id


class SessionNotFound(_OneSession, LookupError):
    """No such session for this user. Another user's session gives the same error."""

    _problem = "session not found"


class SessionExists(_OneSession):
    """This user already has a session with the id an app asked for."""

    _problem = "session already exists"


class SessionExpired(_OneSession):
    """The session passed its idle timeout; the user's persistent memory is kept."""

    _problem = "session expired"


class AccessDenied(IsolationError):
    """A missing or unknown API key."""


class Forbidden(AccessDenied):
    """A valid key that asks for more than its access level allows."""


class ConfigError(IsolationError, ValueError):
    """Configuration that does not validate."""


class MissingSecret(ConfigError):
    """A ``${{ secrets.NAME }}`` reference with no value in the environment or mapping."""

    def __init__(self, name: str) -> None:
        super().__init__(f"missing secret: {name}")
        self.name = name


class StorageError(IsolationError):
    """The storage backend failed. The driver's exception is chained as ``__cause__``."""


class StorageUnavailable(StorageError):
    """The storage backend cannot be reached (connection refused, server gone)."""


class DeadlineExceeded(StorageUnavailable):
    """The call ran past its deadline (``statement_timeout``); its transaction is rolled
    back, so nothing it wrote is stored later. Retry it (with the same idempotency key)."""


class UnsupportedOperation(StorageError, NotImplementedError):
    """The backend does not implement this storage operation (its primitive ``_name``)."""


class AdapterUnavailable(IsolationError, ImportError):
    """An optional framework is missing; the message holds the pip line that fixes it."""

    def __init__(self, framework: str, extra: str) -> None:
        super().__init__(f"{framework} is not installed: pip install 'muxi-isolation[{extra}]'")
        self.framework = framework
        self.extra = extra


class UnsupportedStore(IsolationError, TypeError):
    """A store we do not own that cannot be scoped safely; the message names what is missing."""


class UnreadableSource(IsolationError, ValueError):
    """An import source that cannot be read (missing table, bad JSON, unknown format).

    Raised before anything is written: an import checks its whole source first.
    """
