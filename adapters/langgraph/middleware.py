"""An agent middleware that runs each ``create_agent`` call for the user in its context.

    agent = create_agent(
        model, tools,
        checkpointer=MuxiCheckpointer(backend, sessions=iso.sessions),
        store=MuxiStore(backend, index=...),
        middleware=[MuxiAgentMiddleware()],
        context_schema=MuxiContext,
    )
    agent.invoke({"messages": [...]},
                 {"configurable": {"thread_id": sid}},
                 context=MuxiContext(user_id="tenant_a:user_1", session_id=sid))

The runtime context names the user (``X-Muxi-User-Id`` form) and the session; without them
the agent refuses to run (``MissingScope``), and a ``thread_id`` other than the session id
is a ``ScopeViolation``. The checkpointer reads the same context from the config LangGraph
hands it; the middleware binds that user (``use_scope``) around every model and tool call,
so ``runtime.store`` and anything scoped by context act for that user only, and refuses a
store that is not a ``MuxiStore`` (it could not be scoped). With ``memories=`` it searches
that user's store for facts relevant to the last user message and adds them to the system
message before each model call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.store.base import SearchItem
from langgraph.types import Command

from muxi_isolation.context import use_scope
from muxi_isolation.errors import MissingScope, UnsupportedStore
from muxi_isolation.scope import Scope

from .._plans import Plan, step, twins
from ._scope import context_scope, graph_config, header_scope, resolve
from .store import MuxiStore

__all__ = ["MuxiAgentMiddleware", "MuxiContext"]

Namespace = tuple[str, ...]


@dataclass(frozen=True)
class MuxiContext:
    """The agent's runtime context: who is asking, in which session (the thread id)."""

    user_id: str
    session_id: str


class MuxiAgentMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Binds each run to the user and session of its runtime context.

    ``memories``: the store namespace holding the user's facts (e.g. ``("memories",)``),
    or ``None`` to inject nothing; ``memory_limit`` facts at most.
    """

    def __init__(
        self,
        *,
        memories: Namespace | None = None,
        memory_limit: int = 3,
        memory_heading: str = "What you know about this user:",
    ) -> None:
        super().__init__()
        self.memories = None if memories is None else tuple(memories)
        self.memory_limit = memory_limit
        self.memory_heading = memory_heading

    # -- the scope ---------------------------------------------------------------------

    @staticmethod
    def scope_of(runtime: Any) -> Scope:
        """The user and session the runtime context names; ``MissingScope`` if it does not."""
        scope = context_scope(getattr(runtime, "context", None))
        if scope is None or scope.session_id is None:
            raise MissingScope(
                "the agent needs a runtime context with user_id and session_id "
                "(context_schema=MuxiContext, invoke(..., context=MuxiContext(...)))"
            )
        return scope

    def _scope(self, runtime: Any) -> Scope:
        """The runtime context's user and session, agreeing with every other source: the
        run's ``configurable["user_id"]``, its ``thread_id`` and ``use_scope()``'s."""
        config = graph_config()
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        session = None if thread is None else str(thread)
        return resolve(self.scope_of(runtime), header_scope(config), session=session)

    def _check(self, runtime: Runtime[Any]) -> Scope:
        scope = self._scope(runtime)
        store = runtime.store
        if store is not None and not isinstance(store, MuxiStore):
            raise UnsupportedStore(
                f"{type(store).__name__} is not scoped per user; use MuxiStore as the store"
            )
        return scope

    @contextmanager
    def _bound(self, runtime: Any) -> Iterator[Scope]:
        with use_scope(self._scope(runtime)) as scope:
            yield scope

    # -- hooks -------------------------------------------------------------------------

    def before_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        self._check(runtime)
        return None

    async def abefore_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self.before_agent(state, runtime)  # a check, no I/O: the sync half as is

    # The handler is the framework's: sync on the sync half, async on the async one.
    def _wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Any]
    ) -> Plan[Any]:
        with self._bound(request.runtime) as scope:
            store = request.runtime.store
            query = _last_user_text(request)
            if self.memories is not None and isinstance(store, MuxiStore) and query:
                mine = store.for_user(scope)
                found = yield from step(
                    mine.search, mine.asearch, self.memories, query=query, limit=self.memory_limit
                )
                request = self._with_memories(request, found)
            return (yield from step(handler, handler, request))

    wrap_model_call, awrap_model_call = twins(_wrap_model_call)

    def _wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Plan[ToolMessage | Command[Any]]:
        with self._bound(request.runtime):
            answer: ToolMessage | Command[Any] = yield from step(handler, handler, request)
            return answer

    wrap_tool_call, awrap_tool_call = twins(_wrap_tool_call)

    def _with_memories(
        self, request: ModelRequest[Any], found: list[SearchItem]
    ) -> ModelRequest[Any]:
        if not found:
            return request
        facts = "\n".join(f"- {_text(item.value)}" for item in found)
        note = f"{self.memory_heading}\n{facts}"
        base = request.system_message.text if request.system_message is not None else ""
        text = f"{base}\n\n{note}" if base else note
        return request.override(system_message=SystemMessage(content=text))


def _last_user_text(request: ModelRequest[Any]) -> str:
    for message in reversed(request.messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


def _text(value: dict[str, Any]) -> str:
    for key in ("text", "content", "fact"):
        if isinstance(value.get(key), str):
            return str(value[key])
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
