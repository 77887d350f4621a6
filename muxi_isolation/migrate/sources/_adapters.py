"""Our framework adapters' conversions, as the adapters registered them.

Each adapter registers its conversions with ``muxi_isolation.registry`` when it is
imported, and the registry loads it on first need: the core never imports a framework at
import time, and a missing one fails with the adapter's ``AdapterUnavailable`` (the pip
line that fixes it) when a source is checked, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import registry
from ...records import Memory, Message

__all__ = ["langchain_to_record", "llamaindex_node_to_memory", "llamaindex_to_message"]


def langchain_to_record() -> Callable[[Any], Message]:
    """``BaseMessage`` -> record, as ``MuxiChatMessageHistory`` stores it."""
    return registry.conversion(registry.LANGCHAIN, "to_record")


def llamaindex_to_message() -> Callable[[Any], Message]:
    """``ChatMessage`` -> record, as ``MuxiChatStore`` stores it."""
    return registry.conversion(registry.LLAMAINDEX, "to_message")


def llamaindex_node_to_memory() -> Callable[[Any], Memory]:
    """A node -> memory, as ``MuxiVectorStore`` (LlamaIndex) stores it."""
    return registry.conversion(registry.LLAMAINDEX, "node_to_memory")
