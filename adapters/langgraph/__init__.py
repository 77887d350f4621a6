"""LangGraph and LangChain 1.x agents: a per-user checkpointer and store, and a middleware.

    from muxi_isolation.adapters.langgraph import (
        MuxiAgentMiddleware, MuxiCheckpointer, MuxiContext, MuxiStore,
    )

Threads (checkpoints) and store items belong to one (tenant, user) on any backend: memory,
SQLite or PostgreSQL with row-level security. Needs ``pip install 'muxi-isolation[langgraph]'``.
"""

from __future__ import annotations

from muxi_isolation.errors import AdapterUnavailable

try:
    import langgraph.checkpoint.base
    import langgraph.store.base  # noqa: F401
except ImportError as exc:
    raise AdapterUnavailable("langgraph", "langgraph") from exc
try:
    import langchain.agents.middleware  # noqa: F401
except ImportError as exc:
    raise AdapterUnavailable("langchain", "langgraph") from exc

from .checkpointer import MuxiCheckpointer
from .middleware import MuxiAgentMiddleware, MuxiContext
from .store import MuxiStore

__all__ = ["MuxiAgentMiddleware", "MuxiCheckpointer", "MuxiContext", "MuxiStore"]
