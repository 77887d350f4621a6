"""Import sources: stores that know nothing of users, and our own exports.

    LangChainPostgresHistory   langchain-postgres PostgresChatMessageHistory table
    LangChainInMemoryDump      LangChain InMemoryVectorStore.dump() file
    LangChainPGVector          langchain-postgres PGVector tables
    LlamaIndexSimpleChat       LlamaIndex SimpleChatStore.persist() file
    LlamaIndexPostgresChat     llama-index PostgresChatStore table
    LlamaIndexPGVector         llama-index PGVectorStore table
    MuxiExport                 a muxi-isolation export-user file (JSON Lines)

Each reads its framework's format without writing to it; the LangChain and LlamaIndex
ones convert through our adapters (so a record reads back through them exactly as if the
adapter had written it) and need that framework installed when used.
"""

from __future__ import annotations

from ._kinds import SOURCE_KINDS, open_source
from ._langchain_inmemory import LangChainInMemoryDump
from ._langchain_pgvector import LangChainPGVector
from ._langchain_postgres_history import LangChainPostgresHistory
from ._llamaindex_chat import LlamaIndexPostgresChat, LlamaIndexSimpleChat
from ._llamaindex_pgvector import LlamaIndexPGVector
from ._muxi_export import MuxiExport

__all__ = [
    "SOURCE_KINDS",
    "LangChainInMemoryDump",
    "LangChainPGVector",
    "LangChainPostgresHistory",
    "LlamaIndexPGVector",
    "LlamaIndexPostgresChat",
    "LlamaIndexSimpleChat",
    "MuxiExport",
    "open_source",
]
