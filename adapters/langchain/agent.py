"""``LangChainAgent``: a LangChain chat model, or an agent graph, as the chat endpoint's agent.

Registered with the core on import (``muxi_isolation.registry``), so ``as_agent`` and
``load_agent`` serve any LangChain ``Runnable`` with it.
"""

from __future__ import annotations

from typing import Any

from muxi_isolation import registry
from muxi_isolation.agent import DEFAULT_SYSTEM, Turn, reply_text, system_prompt
from muxi_isolation.errors import AdapterUnavailable

__all__ = ["LangChainAgent"]


class LangChainAgent:
    """A LangChain chat model, or an agent graph taking ``{"messages": [...]}``, as the agent."""

    def __init__(self, model: Any, *, system: str = DEFAULT_SYSTEM, remember: bool = True) -> None:
        try:
            from langchain_core.language_models import BaseLanguageModel
        except ImportError as exc:
            raise AdapterUnavailable("langchain-core", "langchain") from exc
        self.model = model
        self.system = system
        self.keep = remember
        self._is_model = isinstance(model, BaseLanguageModel)

    async def respond(self, turn: Turn) -> str:
        from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

        kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        system = await system_prompt(turn, self.system, self.keep)
        messages: list[BaseMessage] = [SystemMessage(system)]
        messages += [kinds[m.role](m.content) for m in turn.history if m.role in kinds]
        messages.append(HumanMessage(turn.message))
        if self._is_model:
            reply = await self.model.ainvoke(messages)
        else:
            reply = (await self.model.ainvoke({"messages": messages}))["messages"][-1]
        return reply_text(getattr(reply, "content", reply))


# Chat models and agent graphs are Runnables.
registry.register_agent(registry.LANGCHAIN, "langchain_core.runnables", "Runnable", LangChainAgent)
