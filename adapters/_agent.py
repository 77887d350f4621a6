"""What the framework agents share: the conversation a model hears in a chat turn.

``LangChainAgent`` and ``LlamaIndexAgent`` (each registered by its adapter) differ only in
the framework they need and how that framework is asked (``_ask``).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from muxi_isolation.agent import DEFAULT_SYSTEM, Turn, system_prompt
from muxi_isolation.errors import AdapterUnavailable

__all__ = ["ChatAgent"]

_ROLES = ("system", "user", "assistant")  # what a model is shown of the session's history


class ChatAgent:
    """A framework's model as the chat endpoint's agent. Each turn it hears the system
    prompt (with the user's memories; a "Remember ..." is stored first if ``remember``),
    the session's history and the new message, as (role, content) pairs."""

    requires: ClassVar[tuple[str, str, str]]  # (module, its distribution, our extra)

    def __init__(self, model: Any, *, system: str = DEFAULT_SYSTEM, remember: bool = True) -> None:
        module, distribution, extra = self.requires
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise AdapterUnavailable(distribution, extra) from exc
        self.model = model
        self.system = system
        self.keep = remember

    async def respond(self, turn: Turn) -> str:
        system = await system_prompt(turn, self.system, self.keep)
        said = [(m.role, m.content) for m in turn.history if m.role in _ROLES]
        return await self._ask([("system", system), *said, ("user", turn.message)])

    async def _ask(self, conversation: list[tuple[str, Any]]) -> str:
        """The model's reply to ``conversation``, as text."""
        raise NotImplementedError("_ask")
