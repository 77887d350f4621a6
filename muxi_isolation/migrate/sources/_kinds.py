"""Source kinds by name, as the CLI names them, and the options each one needs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfigError
from .._units import Source
from ._langchain_inmemory import LangChainInMemoryDump
from ._langchain_pgvector import LangChainPGVector
from ._langchain_postgres_history import LangChainPostgresHistory
from ._llamaindex_chat import LlamaIndexPostgresChat, LlamaIndexSimpleChat
from ._llamaindex_pgvector import LlamaIndexPGVector
from ._muxi_export import MuxiExport

__all__ = ["SOURCE_KINDS", "open_source"]

SOURCE_KINDS = {
    "langchain-postgres-history": "a PostgresChatMessageHistory table (URL, --table)",
    "langchain-inmemory": "an InMemoryVectorStore.dump() file (PATH, --key-field)",
    "langchain-pgvector": "PGVector tables (URL, --collection, --key-field)",
    "llamaindex-simple-chat": "a SimpleChatStore.persist() file (PATH)",
    "llamaindex-postgres-chat": "a PostgresChatStore table (URL, --table)",
    "llamaindex-pgvector": "a PGVectorStore table (URL, --table, --key-field)",
    "muxi-export": "a muxi-isolation export-user file (PATH)",
}


def open_source(
    kind: str,
    location: str,
    *,
    table: str | None = None,
    schema: str | None = None,
    collections: Sequence[str] | None = None,
    key_field: str | None = None,
) -> Source:
    """A source of ``kind`` (see ``SOURCE_KINDS``) at a file path or database URL."""
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source kind {kind!r}: one of {', '.join(SOURCE_KINDS)}")

    def need_table() -> str:
        if not table:
            raise ConfigError(f"{kind} needs --table")
        return table

    unused = {"--key-field": key_field, "--collection": collections, "--table": table}
    takes = {
        "langchain-postgres-history": {"--table"},
        "langchain-inmemory": {"--key-field"},
        "langchain-pgvector": {"--collection", "--key-field"},
        "llamaindex-postgres-chat": {"--table"},
        "llamaindex-pgvector": {"--table", "--key-field"},
    }.get(kind, set())
    extra = sorted(flag for flag, value in unused.items() if value and flag not in takes)
    if extra:
        raise ConfigError(f"{kind} does not take {', '.join(extra)}")
    if kind == "langchain-postgres-history":
        return LangChainPostgresHistory(location, need_table(), schema=schema)
    if kind == "langchain-inmemory":
        return LangChainInMemoryDump(Path(location), key_field=key_field)
    if kind == "langchain-pgvector":
        return LangChainPGVector(
            location, collections=collections, key_field=key_field, schema=schema
        )
    if kind == "llamaindex-simple-chat":
        return LlamaIndexSimpleChat(Path(location))
    if kind == "llamaindex-postgres-chat":
        return LlamaIndexPostgresChat(location, table or "chatstore", schema=schema or "public")
    if kind == "llamaindex-pgvector":
        return LlamaIndexPGVector(
            location, need_table(), schema=schema or "public", key_field=key_field
        )
    return MuxiExport(Path(location))
