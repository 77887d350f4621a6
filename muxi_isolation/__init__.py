"""muxi-isolation: MUXI-style multi-user isolation for any agent app.

Every read and write is stamped and filtered by tenant, user and session. The core imports
no agent framework; adapters live in ``muxi_isolation.adapters``.
"""

from .config import Config, load_config
from .context import current_scope, get_scope, use_scope
from .errors import (
    AccessDenied,
    AdapterUnavailable,
    ConfigError,
    DeadlineExceeded,
    DuplicateRequest,
    Forbidden,
    InvalidFilter,
    InvalidIdentifier,
    InvalidInput,
    IsolationError,
    KeyReused,
    MissingScope,
    MissingSecret,
    QuotaExceeded,
    ReservedKey,
    ScopeViolation,
    SessionError,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    StorageError,
    StorageUnavailable,
    UnreadableSource,
    UnsupportedStore,
)
from .facade import Isolation, SessionMessages, UserMemories
from .keys import AccessLevel, Grant, KeyRing
from .records import Memory, Message, Receipt, SessionRecord
from .scope import DEFAULT_TENANT, DEFAULT_USER, Scope
from .sessions import SessionManager
from .stores import Backend, MemoryBackend, open_backend

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TENANT",
    "DEFAULT_USER",
    "AccessDenied",
    "AccessLevel",
    "AdapterUnavailable",
    "Backend",
    "Config",
    "ConfigError",
    "DeadlineExceeded",
    "DuplicateRequest",
    "Forbidden",
    "Grant",
    "InvalidFilter",
    "InvalidIdentifier",
    "InvalidInput",
    "Isolation",
    "IsolationError",
    "KeyReused",
    "KeyRing",
    "Memory",
    "MemoryBackend",
    "Message",
    "MissingScope",
    "MissingSecret",
    "QuotaExceeded",
    "Receipt",
    "ReservedKey",
    "Scope",
    "ScopeViolation",
    "SessionError",
    "SessionExists",
    "SessionExpired",
    "SessionManager",
    "SessionMessages",
    "SessionNotFound",
    "SessionRecord",
    "StorageError",
    "StorageUnavailable",
    "UnreadableSource",
    "UnsupportedStore",
    "UserMemories",
    "current_scope",
    "get_scope",
    "load_config",
    "open_backend",
    "use_scope",
]
