"""A LangChain chat chain with memory per user and per session, two users in parallel.

Swapping LangChain's in-memory history for ours is one argument of
``RunnableWithMessageHistory``: ``MuxiHistoryFactory(backend)`` with
``history_factory_config``, then each call names its ``user_id`` (the X-Muxi-User-Id form,
``tenant_a:alice``) and ``session_id``. The chat model is a tiny fake that answers from the
history it is shown, so the output proves what each user's history holds.

Run: python examples/langchain_chat.py [STORAGE_URL]
     (default: a fresh SQLite file; "memory://" also works. No network, about a second.)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from muxi_isolation import Scope, SessionManager, open_backend
from muxi_isolation.adapters.langchain import (
    MuxiChatMessageHistory,
    MuxiHistoryFactory,
    history_factory_config,
)

# LangChain 1.x deprecates RunnableWithMessageHistory in favour of LangGraph persistence;
# it still works and is what most existing apps use, so this demo keeps it quietly.
warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")


def plural(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class RecallModel(BaseChatModel):
    """A fake chat model: notes what it is told, and recalls it from the history it sees."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        said = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
        question = said[-1]
        if question.lower().startswith("what do you know"):
            known = "; ".join(said[:-1]) or "nothing yet"
            text = f"From our {plural(len(messages) - 1, 'earlier message')}: {known}"
        else:
            text = f"Noted ({plural(len(messages), 'message')} in this session so far)."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    @property
    def _llm_type(self) -> str:
        return "recall-fake"


def build_chain(factory: MuxiHistoryFactory) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    return RunnableWithMessageHistory(
        prompt | RecallModel(),
        factory,
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=history_factory_config,
    )


SCRIPTS = {
    "tenant_a:alice": ["My name is Alice.", "I like jazz.", "What do you know about me?"],
    "tenant_a:bob": ["My name is Bob.", "I like rock.", "What do you know about me?"],
}


async def converse(chain: RunnableWithMessageHistory, user: str, session_id: str) -> list[str]:
    config: Any = {"configurable": {"user_id": user, "session_id": session_id}}
    replies = []
    for text in SCRIPTS[user]:
        reply = await chain.ainvoke({"question": text}, config)
        replies.append(str(reply.content))
        print(f"{user:>15} > {text}\n{'':>15} < {reply.content}")
        await asyncio.sleep(0)  # let the other user's turn interleave with this one
    return replies


async def main(url: str) -> None:
    backend = open_backend(url)
    sessions = SessionManager(backend, timeout=3600)
    chain = build_chain(MuxiHistoryFactory(backend, sessions))
    ids = {user: sessions.create(Scope.parse(user)).id for user in SCRIPTS}
    print(f"storage: {url}\n")

    alice, bob = await asyncio.gather(*(converse(chain, user, ids[user]) for user in SCRIPTS))
    assert alice[-1] == "From our 4 earlier messages: My name is Alice.; I like jazz.", alice
    assert bob[-1] == "From our 4 earlier messages: My name is Bob.; I like rock.", bob

    # Bob naming Alice's session id gets a session of his own under that id: session ids
    # are per user, so a client picks any id it likes and still reaches only its own.
    peek = chain.invoke(
        {"question": "What do you know about me?"},
        {"configurable": {"user_id": "tenant_a:bob", "session_id": ids["tenant_a:alice"]}},
    )
    print(f"\nbob naming alice's session id: {peek.content}")
    assert peek.content == "From our 0 earlier messages: nothing yet", peek.content

    alice_scope = Scope.parse("tenant_a:alice", ids["tenant_a:alice"])
    stored = MuxiChatMessageHistory(backend, alice_scope, sessions).messages
    print(f"alice's stored history: {plural(len(stored), 'message')}, none of bob's")
    assert not any("Bob" in str(m.content) for m in stored)
    backend.close()
    print("\nisolation held: each user's chain saw only that user's history.")


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'langchain_chat.db'}"
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else default))
