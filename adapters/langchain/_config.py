"""The user a LangChain ``RunnableConfig`` names: ``configurable["user_id"]``.

LangChain keeps the config of the runnable that is running in a context variable
(``var_child_runnable_config``, what ``ensure_config()`` reads): every chain step runs
under its own, and ``MuxiRetriever.invoke`` sets the one it is invoked with. So a store
called anywhere inside ``chain.invoke(x, {"configurable": {"user_id": ...}})`` or
``.batch(xs, [config, ...])`` sees the user of its own item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from muxi_isolation.scope import Scope

__all__ = ["arun_with_config", "config_scope", "run_with_config"]

T = TypeVar("T")


def config_scope() -> Scope | None:
    """The user ``configurable["user_id"]`` of the running config names (no session)."""
    config = var_child_runnable_config.get() or {}
    user = (config.get("configurable") or {}).get("user_id")
    return None if user is None else Scope.parse(user)


def run_with_config(config: RunnableConfig, call: Callable[[], T]) -> T:
    """``call()`` with ``config`` as the running config, as a chain step runs."""
    context = copy_context()
    context.run(var_child_runnable_config.set, config)
    return context.run(call)


async def arun_with_config(config: RunnableConfig, call: Coroutine[Any, Any, T]) -> T:
    # A task copies the context it is created in (Python 3.10 has no create_task(context=)).
    context = copy_context()
    context.run(var_child_runnable_config.set, config)
    return await context.run(asyncio.create_task, call)
