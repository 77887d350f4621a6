"""``LlamaIndexAgent``: a LlamaIndex LLM as the chat endpoint's agent.

Registered with the core on import (``muxi_isolation.registry``), so ``as_agent`` and
``load_agent`` serve any LlamaIndex ``BaseLLM`` with it.
"""

from __future__ import annotations

from typing import Any

from muxi_isolation import registry
from muxi_isolation.agent import DEFAULT_SYSTEM, Turn, reply_text, system_prompt
from muxi_isolation.errors import AdapterUnavailable

__all__ = ["LlamaIndexAgent"]


class LlamaIndexAgent:
    """A LlamaIndex LLM (anything with ``achat``) as the agent."""

    def __init__(self, llm: Any, *, system: str = DEFAULT_SYSTEM, remember: bool = True) -> None:
        try:
            import llama_index.core.llms  # noqa: F401
        except ImportError as exc:
            raise AdapterUnavailable("llama-index-core", "llamaindex") from exc
        self.llm = llm
        self.system = system
        self.keep = remember

    async def respond(self, turn: Turn) -> str:
        from llama_index.core.llms import ChatMessage

        roles = {"user", "assistant", "system"}
        system = await system_prompt(turn, self.system, self.keep)
        messages = [ChatMessage(role="system", content=system)]
        messages += [
            ChatMessage(role=m.role, content=reply_text(m.content))
            for m in turn.history
            if m.role in roles
        ]
        messages.append(ChatMessage(role="user", content=turn.message))
        response = await self.llm.achat(messages)
        return reply_text(response.message.content)


registry.register_agent(
    registry.LLAMAINDEX, "llama_index.core.base.llms.base", "BaseLLM", LlamaIndexAgent
)
