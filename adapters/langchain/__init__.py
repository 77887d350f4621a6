"""LangChain adapter: per-user, per-session chat history, vector store and retriever.

    from muxi_isolation.adapters.langchain import (
        MuxiChatMessageHistory, MuxiHistoryFactory, history_factory_config,
        MuxiVectorStore, scope_vectorstore, LangChainAgent,
    )

``MuxiChatMessageHistory`` and ``MuxiVectorStore`` are native on the project's storage
(any ``Backend``); ``scope_vectorstore`` wraps a LangChain vector store we do not own;
``LangChainAgent`` serves a chat model or agent graph as the chat endpoint's agent.
Needs ``pip install 'muxi-isolation[langchain]'``.
"""

from __future__ import annotations

from muxi_isolation.errors import AdapterUnavailable

try:
    import langchain_core  # noqa: F401
except ImportError as exc:
    raise AdapterUnavailable("langchain-core", "langchain") from exc

from muxi_isolation import registry

from ._messages import from_record, to_record
from .agent import LangChainAgent
from .embeddings import HashingEmbeddings
from .history import MuxiChatMessageHistory, MuxiHistoryFactory, history_factory_config
from .scoped import (
    FilterDialect,
    ScopedVectorStore,
    UnsupportedStore,
    register_filter_dialect,
    scope_vectorstore,
)
from .vectorstore import MuxiRetriever, MuxiVectorStore

__all__ = [
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
]

# What the importers (muxi_isolation.migrate) convert LangChain records with.
registry.register_conversion(registry.LANGCHAIN, "to_record", to_record)
