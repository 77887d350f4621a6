"""Pins the public names: removing or renaming one is a breaking change."""

from __future__ import annotations

import muxi_isolation
from muxi_isolation import errors

PUBLIC = {
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
    "KeyRing",
    "KeyReused",
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
}


def test_public_names_are_pinned() -> None:
    assert set(muxi_isolation.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(muxi_isolation, name) is not None


def test_every_error_has_one_root_and_is_in_the_tree() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.IsolationError)
        assert name in doc, f"{name} missing from the tree in errors' docstring"


def test_errors_carry_their_details() -> None:
    assert errors.SessionNotFound("s").session_id == "s"
    assert errors.SessionExpired("s").session_id == "s"
    assert errors.SessionExists("s").session_id == "s"
    exc = errors.AdapterUnavailable("langchain-core", "langchain")
    assert "pip install 'muxi-isolation[langchain]'" in str(exc)
    assert isinstance(exc, ImportError)
