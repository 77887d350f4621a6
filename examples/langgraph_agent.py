"""One LangChain 1.x agent serving two users of two tenants at once, each kept apart.

    python examples/langgraph_agent.py            # SQLite file in a temp dir
    python examples/langgraph_agent.py URL        # memory://, sqlite:///x.db, postgresql://...

``create_agent`` gets a per-user checkpointer (the conversation, per session) and store
(long-term facts), and ``MuxiAgentMiddleware`` runs each call for the user and session
named in its runtime context. The model is a small offline fake: it saves "remember ..."
messages through a tool and answers "what do you know?" from the facts the middleware
injects and the conversation it sees. Both users talk in parallel (``asyncio.gather``);
each remembers only its own conversation and facts.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.config import get_store

from muxi_isolation import Backend, Isolation, open_backend
from muxi_isolation.adapters.langchain import HashingEmbeddings
from muxi_isolation.adapters.langgraph import (
    MuxiAgentMiddleware,
    MuxiCheckpointer,
    MuxiContext,
    MuxiStore,
)

FACTS = ("memories",)


def plural(n: int, noun: str) -> str:
    """``1 thing``, ``2 things``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@tool
def save_fact(fact: str) -> str:
    """Remember a fact about the user."""
    get_store().put(FACTS, str(uuid.uuid4()), {"text": fact})  # the middleware's user only
    return f"saved: {fact}"


class ScriptedModel(BaseChatModel):
    """An offline stand-in for a chat model: deterministic, tool-calling."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    @staticmethod
    def _reply(messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return AIMessage(content=f"OK, I will remember that ({last.text}).")
        said = [m.text for m in messages if isinstance(m, HumanMessage)]
        text = said[-1] if said else ""
        if text.lower().startswith("remember "):
            call = {"name": "save_fact", "args": {"fact": text[9:]}, "id": str(uuid.uuid4())}
            return AIMessage(content="", tool_calls=[call])
        system = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
        facts = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        return AIMessage(
            content=f"You told me {plural(len(said) - 1, 'thing')} before this. "
            f"I know: {', '.join(facts) or 'nothing about you yet'}."
        )


def build(backend: Backend, *, session_timeout: float = 3600) -> tuple[Any, Isolation]:
    """The agent, and the ``Isolation`` facade whose sessions its threads are."""
    iso = Isolation(backend, session_timeout=session_timeout)
    index = {"dims": 256, "embed": HashingEmbeddings(256), "fields": ["text"]}
    agent = create_agent(
        ScriptedModel(),
        [save_fact],
        system_prompt="You are a helpful assistant.",
        checkpointer=MuxiCheckpointer(backend, sessions=iso.sessions),
        store=MuxiStore(backend, index=index),  # type: ignore[arg-type]
        middleware=[MuxiAgentMiddleware(memories=FACTS)],
        context_schema=MuxiContext,
    )
    return agent, iso


async def chat(agent: Any, user_id: str, session_id: str, text: str) -> str:
    result = await agent.ainvoke(
        {"messages": [HumanMessage(text)]},
        {"configurable": {"thread_id": session_id}},
        context=MuxiContext(user_id=user_id, session_id=session_id),
    )
    return str(result["messages"][-1].text)


async def conversation(agent: Any, iso: Isolation, user_id: str, fact: str) -> list[str]:
    session = await iso.sessions.acreate(iso.scope(user_id))
    replies = [await chat(agent, user_id, session.id, f"remember {fact}")]
    replies.append(await chat(agent, user_id, session.id, "what do you know about me?"))
    return replies


async def main(url: str) -> dict[str, list[str]]:
    options = {} if url == "memory://" else {"embedding_dimension": None}
    agent, iso = build(open_backend(url, **options))
    users = {"tenant_a:alice": "I like Python", "tenant_b:bob": "I live in Lyon"}
    try:
        replies = await asyncio.gather(
            *(conversation(agent, iso, user, fact) for user, fact in users.items())
        )
    finally:
        await iso.backend.aclose()
    return dict(zip(users, replies, strict=True))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tmp) / 'agent.db'}"
        for user, replies in asyncio.run(main(target)).items():
            print(f"{user}:")
            for reply in replies:
                print(f"  {reply}")
