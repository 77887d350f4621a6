"""``LangChainAgent``: a LangChain chat model, or an agent graph, as the chat endpoint's agent.

Registered with the core on import (``muxi_isolation.registry``), so ``as_agent`` and
``load_agent`` serve any LangChain ``Runnable`` with it.
"""

from __future__ import annotations

from typing import Any

from muxi_isolation import registry
from muxi_isolation.agent import reply_text

from .._agent import ChatAgent

__all__ = ["LangChainAgent"]


class LangChainAgent(ChatAgent):
    """A LangChain chat model, or an agent graph taking ``{"messages": [...]}``, as the agent."""

    requires = ("langchain_core.language_models", "langchain-core", "langchain")

    async def _ask(self, conversation: list[tuple[str, Any]]) -> str:
        from langchain_core.language_models import BaseLanguageModel
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        messages = [kinds[role](content) for role, content in conversation]
        if isinstance(self.model, BaseLanguageModel):
            reply = await self.model.ainvoke(messages)
        else:
            reply = (await self.model.ainvoke({"messages": messages}))["messages"][-1]
        return reply_text(getattr(reply, "content", reply))


# Chat models and agent graphs are Runnables.
registry.register_agent(registry.LANGCHAIN, "langchain_core.runnables", "Runnable", LangChainAgent)
