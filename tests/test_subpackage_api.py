"""Pins the public names of every public subpackage and module: removing or renaming one
is a breaking change, and adding one is a decision this file records."""

from __future__ import annotations

import importlib

import pytest

PINNED: dict[str, list[str]] = {
    "muxi_isolation.adapters.langchain": [
        "FilterDialect",
        "HashingEmbeddings",
        "LangChainAgent",
        "MuxiChatMessageHistory",
        "MuxiHistoryFactory",
        "MuxiRetriever",
        "MuxiVectorStore",
        "ScopedVectorStore",
        "UnsupportedStore",
        "from_record",
        "history_factory_config",
        "register_filter_dialect",
        "scope_vectorstore",
        "to_record",
    ],
    "muxi_isolation.adapters.llamaindex": [
        "HashingEmbedding",
        "LlamaIndexAgent",
        "MuxiChatStore",
        "MuxiDBChatStore",
        "MuxiVectorStore",
        "ScopedRetriever",
        "ScopedVectorStore",
        "stamp_nodes",
        "to_chat_message",
        "to_filter",
        "to_message",
    ],
    "muxi_isolation.adapters.langgraph": [
        "MuxiAgentMiddleware",
        "MuxiCheckpointer",
        "MuxiContext",
        "MuxiStore",
    ],
    "muxi_isolation.stores": [
        "Backend",
        "MemoryBackend",
        "open_backend",
        "open_configured_backend",
    ],
    "muxi_isolation.stores.sql": [
        "SCHEMA_VERSION",
        "SQLBackend",
        "citus_ddl",
        "create_app_role",
        "resolve_url",
    ],
    "muxi_isolation.migrate": [
        "EXPORT_FORMAT",
        "EXPORT_VERSION",
        "GRAPH_SECTION",
        "SECTIONS",
        "Broken",
        "Conversation",
        "Extra",
        "ForgetReport",
        "ImportReport",
        "MemoryItem",
        "Problem",
        "Progress",
        "PurgeReport",
        "ScopeMap",
        "Section",
        "Skip",
        "Source",
        "aexport_document",
        "aexport_user",
        "aforget_tenant",
        "aforget_user",
        "aiter_export",
        "apurge_expired",
        "export_document",
        "export_user",
        "forget_tenant",
        "forget_user",
        "iter_export",
        "load_mapping",
        "open_configured_backend",
        "purge_expired",
        "register_section",
        "retention_cutoff",
        "run_import",
        "scope_mapper",
        "to_scope",
    ],
    "muxi_isolation.client": [
        "AsyncFormation",
        "ChatMessage",
        "ChatResponse",
        "Formation",
        "Session",
        "SessionHistory",
        "raise_for_error",
    ],
    "muxi_isolation.server": [
        "ADMIN_PATHS",
        "MAX_BODY_BYTES",
        "PUBLIC_PATHS",
        "Exporter",
        "Forgetter",
        "create_app",
        "export_user",
        "forget_user",
        "iso_time",
        "openapi_document",
        "run_server",
        "serve_in_thread",
    ],
    "muxi_isolation.quotas": [
        "NO_LIMITS",
        "Limits",
        "RateLimiter",
        "check_count",
        "check_messages",
        "lock_key",
        "message_bytes",
    ],
    "muxi_isolation.http": [
        "ANONYMOUS",
        "ERROR_STATUS",
        "GRANT_KEY",
        "KEY_HEADER",
        "RETRY_AFTER",
        "SCOPE_KEY",
        "USER_HEADER",
        "MuxiIsolationMiddleware",
        "error_response",
        "error_status",
        "send_json",
    ],
}


@pytest.mark.parametrize("module", sorted(PINNED))
def test_public_names_are_pinned(module: str) -> None:
    found = importlib.import_module(module)
    assert list(found.__all__) == PINNED[module]
    for name in found.__all__:
        assert getattr(found, name) is not None, name


@pytest.mark.parametrize("module", sorted(PINNED))
def test_no_public_name_is_left_out(module: str) -> None:
    """Every public name a module defines itself (not an import) is in its ``__all__``."""
    found = importlib.import_module(module)
    own = {
        name
        for name, value in vars(found).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module
        and callable(value)
    }
    assert own <= set(found.__all__), sorted(own - set(found.__all__))
