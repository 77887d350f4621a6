"""LlamaIndex chat engines with memory per user and per session, two users side by side.

Swapping LlamaIndex's chat store for ours is one argument: ``MuxiChatStore(backend, scope)``
for ``ChatMemoryBuffer`` (part 1), ``MuxiDBChatStore(backend, scope)`` for the newer
``Memory`` (part 2). The store's keys are the user's session ids: Alice and Bob both use
session ``sess_demo`` and never see each other's messages. The LLM is a tiny fake that
answers from the history it is shown, so the output proves what each user's memory holds.

Run: python examples/llamaindex_chat.py [STORAGE_URL]
     (default: a fresh SQLite file; "memory://" also works. No network, about a second.)
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.memory import ChatMemoryBuffer, Memory, VectorMemoryBlock
from llama_index.core.storage.chat_store.base_db import MessageStatus

from muxi_isolation import Backend, Scope, SessionManager, SessionNotFound, open_backend
from muxi_isolation.adapters.llamaindex import (
    HashingEmbedding,
    MuxiChatStore,
    MuxiDBChatStore,
    MuxiVectorStore,
)

SESSION = "sess_demo"
DIM = 256  # the hashing embedding's size; the SQL store is opened with the same
SCRIPTS = {
    "tenant_a:alice": ["My name is Alice.", "I like jazz.", "What do you know about me?"],
    "tenant_a:bob": ["My name is Bob.", "I like rock.", "What do you know about me?"],
}


def plural(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def words(text: str) -> list[str]:
    """A whitespace tokenizer: offline and easy to reason about."""
    return text.split()


class RecallLLM(CustomLLM):
    """A fake chat model: notes what it is told, and recalls it from the history it sees."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, is_chat_model=True, model_name="recall-fake")

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        said = [m.content or "" for m in messages if m.role == "user"]
        system = " ".join(m.content or "" for m in messages if m.role == "system")
        recalled = re.findall(r"<message role='user'>(.*?)</message>", system)
        if said[-1].lower().startswith("what do you know"):
            known = "; ".join(said[:-1]) or "nothing"
            text = f"In this conversation: {known}"
            if recalled:
                text += f" | from long-term memory: {'; '.join(recalled)}"
        else:
            text = f"Noted ({plural(len(messages), 'message')} in this session so far)."
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError("the demo model does not stream")


def part1_chat_memory_buffer(backend: Backend) -> None:
    print("1. SimpleChatEngine + ChatMemoryBuffer on MuxiChatStore")
    for user, script in SCRIPTS.items():
        memory = ChatMemoryBuffer.from_defaults(
            chat_store=MuxiChatStore(backend, Scope.parse(user)),
            chat_store_key=SESSION,
            tokenizer_fn=words,
        )
        engine = SimpleChatEngine.from_defaults(llm=RecallLLM(), memory=memory)
        for line in script:
            reply = engine.chat(line)
        print(f"   {user:15} -> {reply}")
    alice = MuxiChatStore(backend, Scope.parse("tenant_a:alice"))
    bob = MuxiChatStore(backend, Scope.parse("tenant_a:bob"))
    for name, store in (("alice's", alice), ("bob's", bob)):
        said = plural(len(store.get_messages(SESSION)), "message")
        print(f"   {name + ' keys:':13} {store.get_keys()}, {said}")
    assert "Alice" in str(alice.get_messages(SESSION)) and "Alice" not in str(
        bob.get_messages(SESSION)
    )


async def part2_memory(backend: Backend) -> None:
    print("2. The newer Memory on MuxiDBChatStore, with long-term memory on MuxiVectorStore")
    print("   (a small token limit archives old turns into the user's own vector memory)")
    for user, script in SCRIPTS.items():
        scope = Scope.parse(user)
        store = MuxiDBChatStore(backend, scope)
        long_term = VectorMemoryBlock(
            name="long_term",
            vector_store=MuxiVectorStore(backend, scope),
            embed_model=HashingEmbedding(dim=DIM),
            similarity_top_k=3,
        )
        memory = Memory.from_defaults(
            session_id="sess_long",
            chat_store=store,
            token_limit=24,
            chat_history_token_ratio=0.5,
            token_flush_size=6,
            tokenizer_fn=words,
            memory_blocks=[long_term],
        )
        engine = SimpleChatEngine.from_defaults(llm=RecallLLM(), memory=memory)
        for line in script:
            reply = await engine.achat(line)
        active = await store.count_messages("sess_long")
        archived = await store.count_messages("sess_long", status=MessageStatus.ARCHIVED)
        print(f"   {user:15} -> {reply}")
        print(f"   {'':15}    {active} active, {plural(archived, 'archived message')}")


async def part3_sessions(backend: Backend) -> None:
    print("3. Sessions belong to their user")
    sessions = SessionManager(backend)
    alice = Scope.parse("tenant_a:alice")
    strict = MuxiDBChatStore(backend, Scope.parse("tenant_a:bob"), create_sessions=False)
    record = await sessions.acreate(alice)
    try:
        await strict.add_message(record.id, ChatMessage(content="let me in"))
    except SessionNotFound:
        print(f"   bob writing to alice's {record.id[:12]}...: SessionNotFound")


async def main(url: str) -> None:
    backend = open_backend(url, embedding_dimension=DIM)
    try:
        part1_chat_memory_buffer(backend)
        await part2_memory(backend)
        await part3_sessions(backend)
    finally:
        await backend.aclose()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(f"sqlite:///{Path(tmp) / 'chat.db'}"))
