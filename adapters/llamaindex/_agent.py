"""``LlamaIndexAgent``: a LlamaIndex LLM as the chat endpoint's agent.

Registered with the core on import (``muxi_isolation.registry``), so ``as_agent`` and
``load_agent`` serve any LlamaIndex ``BaseLLM`` with it.
"""

from __future__ import annotations

from typing import Any

from muxi_isolation import registry
from muxi_isolation.agent import DEFAULT_SYSTEM, reply_text

from .._agent import ChatAgent

__all__ = ["LlamaIndexAgent"]


class LlamaIndexAgent(ChatAgent):
    """A LlamaIndex LLM (anything with ``achat``) as the agent."""

    requires = ("llama_index.core.llms", "llama-index-core", "llamaindex")

    def __init__(self, llm: Any, *, system: str = DEFAULT_SYSTEM, remember: bool = True) -> None:
        # only to keep the parameter's name, llm
        super().__init__(llm, system=system, remember=remember)

    @property
    def llm(self) -> Any:
        """The LLM (the agent's ``model``)."""
        return self.model

    async def _ask(self, conversation: list[tuple[str, Any]]) -> str:
        from llama_index.core.llms import ChatMessage

        messages = [
            ChatMessage(role=role, content=reply_text(content)) for role, content in conversation
        ]
        response = await self.llm.achat(messages)
        return reply_text(response.message.content)


registry.register_agent(
    registry.LLAMAINDEX, "llama_index.core.base.llms.base", "BaseLLM", LlamaIndexAgent
)
