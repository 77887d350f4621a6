"""Our framework adapters' conversions, loaded when a source needs them.

Imported by name at call time: the core never imports a framework at import time, and a
missing one fails with the adapter's ``AdapterUnavailable`` (the pip line that fixes it)
when a source is checked, before anything is written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

from ...records import Memory, Message

__all__ = ["langchain_to_record", "llamaindex_node_to_memory", "llamaindex_to_message"]


def _function(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"muxi_isolation.adapters.{module}"), name)


def langchain_to_record() -> Callable[[Any], Message]:
    """``BaseMessage`` -> record, as ``MuxiChatMessageHistory`` stores it."""
    return cast(Callable[[Any], Message], _function("langchain", "to_record"))


def llamaindex_to_message() -> Callable[[Any], Message]:
    """``ChatMessage`` -> record, as ``MuxiChatStore`` stores it."""
    return cast(Callable[[Any], Message], _function("llamaindex", "to_message"))


def llamaindex_node_to_memory() -> Callable[[Any], Memory]:
    """A node -> memory, as ``MuxiVectorStore`` (LlamaIndex) stores it."""
    return cast(Callable[[Any], Memory], _function("llamaindex._nodes", "node_to_memory"))
