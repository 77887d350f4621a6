"""LlamaIndex adapter: scoped chat stores, vector stores and retrievers.

    MuxiChatStore        BaseChatStore for ChatMemoryBuffer; keys are the user's session ids
    MuxiDBChatStore      AsyncDBChatStore for the newer ``Memory`` (active/archived queue)
    MuxiVectorStore      BasePydanticVectorStore on the user's memories (bound parameters)
    ScopedVectorStore    wraps a vector store we do not own (SimpleVectorStore, PGVectorStore)
    ScopedRetriever      wraps any retriever and verifies every node it returns
    HashingEmbedding     a deterministic offline embedding for tests and examples
    LlamaIndexAgent      a LlamaIndex LLM as the chat endpoint's agent
    to_message / to_chat_message   ChatMessage <-> the neutral ``Message`` record

Install with ``pip install 'muxi-isolation[llamaindex]'``.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from muxi_isolation.errors import AdapterUnavailable

    raise AdapterUnavailable("llama-index-core", "llamaindex") from exc

from muxi_isolation import registry

from ._agent import LlamaIndexAgent
from ._chat_store import MuxiChatStore, MuxiDBChatStore
from ._embedding import HashingEmbedding
from ._filters import to_filter
from ._messages import to_chat_message, to_message
from ._nodes import node_to_memory
from ._retriever import ScopedRetriever
from ._scoped import ScopedVectorStore, stamp_nodes
from ._vector_store import MuxiVectorStore

__all__ = [
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
]

# What the importers (muxi_isolation.migrate) convert LlamaIndex records with.
registry.register_conversion(registry.LLAMAINDEX, "to_message", to_message)
registry.register_conversion(registry.LLAMAINDEX, "node_to_memory", node_to_memory)
