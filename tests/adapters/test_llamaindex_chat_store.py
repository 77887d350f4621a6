"""MuxiChatStore (BaseChatStore) and MuxiDBChatStore (AsyncDBChatStore) on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from _clock import Clock
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock, ToolCallBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory import ChatMemoryBuffer, Memory, VectorMemoryBlock
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.storage.chat_store.base_db import MessageStatus

from muxi_isolation import (
    Backend,
    MissingScope,
    ReservedKey,
    Scope,
    SessionExpired,
    SessionManager,
    SessionNotFound,
    use_scope,
)
from muxi_isolation.adapters.llamaindex import (
    HashingEmbedding,
    MuxiChatStore,
    MuxiDBChatStore,
    MuxiVectorStore,
)

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")  # same user id, other tenant
T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)


def words(text: str) -> list[str]:
    """An offline tokenizer: one token per word."""
    return text.split()


def dumps(messages: list[ChatMessage] | None) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in messages or []]


def texts(messages: list[ChatMessage] | None) -> list[str | None]:
    return [m.content for m in messages or []]


def msg(text: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=text)


RICH = [
    ChatMessage(role="system", content="be brief"),
    ChatMessage(role="user", blocks=[TextBlock(text="see"), ImageBlock(url="https://x.org/a.png")]),
    ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id="c1", tool_name="look", tool_kwargs={"q": 1})],
    ),
    ChatMessage(role="tool", content="a cat", additional_kwargs={"tool_call_id": "c1"}),
]


# -- MuxiChatStore ----------------------------------------------------------------------


def test_set_get_add_round_trip_exactly(backend: Backend) -> None:
    store = MuxiChatStore(backend, ALICE)
    store.set_messages("s1", RICH[:2])
    store.add_message("s1", RICH[2])
    store.add_message("s1", RICH[3])
    assert dumps(store.get_messages("s1")) == dumps(RICH)
    store.set_messages("s1", [msg("fresh")])
    assert texts(store.get_messages("s1")) == ["fresh"]


def test_same_key_for_two_users_and_tenants_stays_apart(backend: Backend) -> None:
    stores = {s: MuxiChatStore(backend, s) for s in (ALICE, BOB, ALICE_B)}
    for scope, store in stores.items():
        store.add_message("shared", msg(f"from {scope}"))
    for scope, store in stores.items():
        assert texts(store.get_messages("shared")) == [f"from {scope}"]
        assert store.get_keys() == ["shared"]
    stores[ALICE].add_message("only-alice", msg("x"))
    assert sorted(stores[ALICE].get_keys()) == ["only-alice", "shared"]
    assert stores[BOB].get_keys() == ["shared"]
    assert stores[BOB].get_messages("only-alice") == []


def test_delete_message_is_positional(backend: Backend) -> None:
    store = MuxiChatStore(backend, ALICE)
    store.set_messages("s", [msg(t) for t in "abcde"])
    assert texts([store.delete_message("s", 1)]) == ["b"]
    assert texts([store.delete_message("s", -1)]) == ["e"]
    assert texts([store.delete_message("s", 0)]) == ["a"]
    assert store.delete_message("s", 2) is None
    assert store.delete_message("s", -3) is None
    assert texts(store.get_messages("s")) == ["c", "d"]
    assert store.delete_message("unknown", 0) is None


def test_delete_last_and_all_messages(backend: Backend) -> None:
    store = MuxiChatStore(backend, ALICE)
    assert store.delete_last_message("s") is None
    assert store.delete_messages("s") is None  # no such key, as SimpleChatStore says
    store.set_messages("s", [msg("a"), msg("b")])
    assert texts([store.delete_last_message("s")]) == ["b"]
    assert texts(store.delete_messages("s")) == ["a"]
    assert store.get_messages("s") == []
    assert store.delete_last_message("s") is None
    assert store.delete_messages("s") == []


def test_another_user_deletes_nothing_of_alices(backend: Backend) -> None:
    alice, bob = MuxiChatStore(backend, ALICE), MuxiChatStore(backend, BOB)
    alice.set_messages("s", [msg("a1"), msg("a2")])
    assert bob.delete_message("s", 0) is None
    assert bob.delete_last_message("s") is None
    assert bob.delete_messages("s") is None
    assert texts(alice.get_messages("s")) == ["a1", "a2"]


def test_create_sessions_false_requires_an_existing_session(backend: Backend) -> None:
    sessions = SessionManager(backend)
    store = MuxiChatStore(backend, ALICE, sessions=sessions, create_sessions=False)
    with pytest.raises(SessionNotFound):
        store.add_message("s", msg("x"))
    with pytest.raises(SessionNotFound):
        store.set_messages("s", [msg("x")])
    assert store.get_keys() == []
    sessions.create(BOB, "s")  # Bob's session of that id is not Alice's
    with pytest.raises(SessionNotFound):
        store.add_message("s", msg("x"))
    sessions.create(ALICE, "s")
    store.add_message("s", msg("x"))
    assert texts(store.get_messages("s")) == ["x"]


def test_expired_session_refuses_writes_and_keeps_history(backend: Backend) -> None:
    clock = Clock(T0)
    store = MuxiChatStore(backend, ALICE, sessions=SessionManager(backend, timeout=60, clock=clock))
    store.add_message("s", msg("a"))
    clock.now += timedelta(seconds=30)
    store.add_message("s", msg("b"))  # each write pushes expiry forward
    clock.now += timedelta(seconds=61)
    with pytest.raises(SessionExpired):
        store.add_message("s", msg("c"))
    with pytest.raises(SessionExpired):
        store.set_messages("s", [])
    assert texts(store.get_messages("s")) == ["a", "b"]


def test_reserved_keys_in_a_message_raise_and_write_nothing(backend: Backend) -> None:
    store = MuxiChatStore(backend, ALICE)
    bad = ChatMessage(content="x", additional_kwargs={"muxi_user_id": "bob"})
    with pytest.raises(ReservedKey):
        store.add_message("s", bad)
    with pytest.raises(ReservedKey):
        store.set_messages("s", [msg("ok"), bad])
    assert store.get_keys() == []
    assert store.get_messages("s") == []


def test_without_a_scope_it_fails_closed_or_uses_the_context(backend: Backend) -> None:
    store = MuxiChatStore(backend)
    with pytest.raises(MissingScope):
        store.get_messages("s")
    with pytest.raises(MissingScope):
        store.get_keys()
    with use_scope(ALICE):
        store.add_message("s", msg("alice's"))
    with use_scope(BOB):
        assert store.get_messages("s") == []
    assert texts(MuxiChatStore(backend, ALICE).get_messages("s")) == ["alice's"]


async def test_async_twins(backend: Backend) -> None:
    store = MuxiChatStore(backend, ALICE)
    await store.aset_messages("s", [msg("a"), msg("b")])
    await store.async_add_message("s", msg("c"))
    assert texts(await store.aget_messages("s")) == ["a", "b", "c"]
    assert texts([await store.adelete_message("s", 0)]) == ["a"]
    assert texts([await store.adelete_last_message("s")]) == ["c"]
    assert await store.aget_keys() == ["s"]
    assert await MuxiChatStore(backend, BOB).adelete_messages("s") is None
    assert texts(await store.adelete_messages("s")) == ["b"]
    assert await store.aget_messages("s") == []


def test_chat_memory_buffer_per_user(backend: Backend) -> None:
    def buffer(scope: Scope) -> ChatMemoryBuffer:
        return ChatMemoryBuffer.from_defaults(
            chat_store=MuxiChatStore(backend, scope),
            chat_store_key="sess_1",
            token_limit=6,
            tokenizer_fn=words,
        )

    alice, bob = buffer(ALICE), buffer(BOB)
    alice.put(msg("my name is alice"))
    alice.put(msg("hello alice", "assistant"))
    bob.put(msg("i am bob"))
    assert texts(alice.get_all()) == ["my name is alice", "hello alice"]
    assert texts(bob.get_all()) == ["i am bob"]
    alice.put(msg("what is my name"))
    # the buffer trims to its token limit: newest first, never starting on an assistant
    assert texts(alice.get()) == ["what is my name"]
    alice.reset()
    assert alice.get_all() == []
    assert texts(bob.get_all()) == ["i am bob"]


async def test_chat_memory_buffer_async(backend: Backend) -> None:
    memory = ChatMemoryBuffer.from_defaults(
        chat_store=MuxiChatStore(backend, ALICE), chat_store_key="s", tokenizer_fn=words
    )
    await memory.aput(msg("one"))
    await memory.aset([msg("two"), msg("three", "assistant")])
    assert texts(await memory.aget_all()) == ["two", "three"]
    assert texts(await MuxiChatStore(backend, ALICE).aget_messages("s")) == ["two", "three"]
    await memory.areset()
    assert await memory.aget_all() == []


# -- MuxiDBChatStore --------------------------------------------------------------------


async def test_db_store_statuses_counts_and_windows(backend: Backend) -> None:
    store = MuxiDBChatStore(backend, ALICE)
    await store.add_messages("s", [msg(t) for t in "abcd"])
    await store.add_message("s", msg("old"), status=MessageStatus.ARCHIVED)
    assert texts(await store.get_messages("s")) == ["a", "b", "c", "d"]
    assert texts(await store.get_messages("s", status=MessageStatus.ARCHIVED)) == ["old"]
    assert texts(await store.get_messages("s", status=None)) == ["a", "b", "c", "d", "old"]
    assert texts(await store.get_messages("s", limit=2, offset=1)) == ["b", "c"]
    assert await store.count_messages("s") == 4
    assert await store.count_messages("s", status=MessageStatus.ARCHIVED) == 1
    assert await store.count_messages("s", status=None) == 5
    assert await store.count_messages("unknown") == 0


async def test_db_store_archive_and_delete_oldest(backend: Backend) -> None:
    store = MuxiDBChatStore(backend, ALICE)
    await store.add_messages("s", [msg(t) for t in "abcde"])
    assert texts(await store.archive_oldest_messages("s", 2)) == ["a", "b"]
    assert texts(await store.get_messages("s")) == ["c", "d", "e"]
    assert texts(await store.get_messages("s", status=MessageStatus.ARCHIVED)) == ["a", "b"]
    assert texts(await store.delete_oldest_messages("s", 1)) == ["c"]
    assert texts(await store.get_messages("s", status=None)) == ["a", "b", "d", "e"]
    await store.delete_messages("s", status=MessageStatus.ARCHIVED)
    assert texts(await store.get_messages("s", status=None)) == ["d", "e"]
    assert texts([await store.delete_message("s", -1)]) == ["e"]
    assert await store.delete_message("s", 5) is None
    await store.set_messages("s", [msg("x")], status=MessageStatus.ARCHIVED)
    assert await store.count_messages("s") == 0
    assert await store.count_messages("s", status=None) == 1
    await store.delete_messages("s")
    assert await store.count_messages("s", status=None) == 0


async def test_db_store_keys_and_isolation(backend: Backend) -> None:
    alice, bob = MuxiDBChatStore(backend, ALICE), MuxiDBChatStore(backend, BOB)
    await alice.add_messages("shared", [msg("a1"), msg("a2")])
    await bob.add_message("shared", msg("b1"))
    await alice.add_message("mine", msg("a3"))
    assert sorted(await alice.get_keys()) == ["mine", "shared"]
    assert await bob.get_keys() == ["shared"]
    assert texts(await bob.archive_oldest_messages("shared", 5)) == ["b1"]  # his own
    assert texts(await alice.get_messages("shared")) == ["a1", "a2"]
    assert await bob.delete_oldest_messages("mine", 5) == []
    assert await bob.delete_message("mine", 0) is None
    await bob.delete_messages("mine")
    assert texts(await alice.get_messages("mine")) == ["a3"]
    assert await bob.count_messages("mine") == 0


async def test_db_store_refuses_reserved_keys_and_expired_sessions(backend: Backend) -> None:
    clock = Clock(T0)
    sessions = SessionManager(backend, timeout=60, clock=clock)
    store = MuxiDBChatStore(backend, ALICE, sessions=sessions)
    with pytest.raises(ReservedKey):
        await store.add_message(
            "s", ChatMessage(content="x", additional_kwargs={"muxi_tenant_id": "t"})
        )
    assert await store.get_keys() == []
    await store.add_message("s", msg("a"))
    clock.now += timedelta(minutes=5)
    with pytest.raises(SessionExpired):
        await store.add_message("s", msg("b"))
    with pytest.raises(SessionExpired):
        await store.archive_oldest_messages("s", 1)
    assert texts(await store.get_messages("s")) == ["a"]
    strict = MuxiDBChatStore(backend, ALICE, sessions=sessions, create_sessions=False)
    with pytest.raises(SessionNotFound):
        await strict.add_message("new", msg("x"))


class Recorder(BaseMemoryBlock[str]):
    """A memory block that keeps what the FIFO queue flushes into it."""

    seen: list[str] = Field(default_factory=list)

    async def _aget(self, messages: list[ChatMessage] | None = None, **kwargs: Any) -> str:
        return ""

    async def _aput(self, messages: list[ChatMessage]) -> None:
        self.seen.extend(m.content or "" for m in messages)


async def test_memory_puts_gets_and_archives_per_user(backend: Backend) -> None:
    def memory(scope: Scope, block: Recorder) -> Memory:
        return Memory.from_defaults(
            session_id="sess_chat",
            chat_store=MuxiDBChatStore(backend, scope),
            token_limit=20,
            token_flush_size=4,
            chat_history_token_ratio=0.5,
            tokenizer_fn=words,
            memory_blocks=[block],
        )

    alice_block, bob_block = Recorder(name="alice"), Recorder(name="bob")
    alice, bob = memory(ALICE, alice_block), memory(BOB, bob_block)
    await bob.aput(msg("bob says hi"))
    turns = [
        ("user", "one two three"),
        ("assistant", "four five six"),
        ("user", "seven eight nine"),
        ("assistant", "ten eleven twelve"),
        ("user", "thirteen fourteen"),
    ]
    for role, text in turns:
        await alice.aput(msg(text, role))
    store = MuxiDBChatStore(backend, ALICE)
    active = texts(await store.get_messages("sess_chat"))
    archived = texts(await store.get_messages("sess_chat", status=MessageStatus.ARCHIVED))
    # over 10 tokens (20 * 0.5) the oldest turns were archived, whole turns at a time
    assert archived and active
    assert archived + active == [t for _, t in turns]
    assert sum(len(words(t or "")) for t in active) <= 10
    assert alice_block.seen == archived
    assert texts(await alice.aget()) == active
    assert texts(await alice.aget_all()) == [t for _, t in turns]
    assert texts(await bob.aget()) == ["bob says hi"]
    assert bob_block.seen == []
    await alice.areset()
    assert await alice.aget_all() == []
    assert texts(await bob.aget_all()) == ["bob says hi"]


async def test_memory_with_a_long_term_vector_block_per_user(backend: Backend) -> None:
    """Short-term turns flushed by Memory land in the user's own long-term vector memory."""

    def memory(scope: Scope) -> Memory:
        block = VectorMemoryBlock(
            name="long_term",
            vector_store=MuxiVectorStore(backend, scope),
            embed_model=HashingEmbedding(dim=64),
            similarity_top_k=2,
        )
        return Memory.from_defaults(
            session_id="sess_v",
            chat_store=MuxiDBChatStore(backend, scope),
            token_limit=16,
            token_flush_size=4,
            chat_history_token_ratio=0.5,
            tokenizer_fn=words,
            memory_blocks=[block],
        )

    alice, bob = memory(ALICE), memory(BOB)
    for text in ("my cat is called Tom", "noted", "my dog is called Rex", "noted"):
        await alice.aput(msg(text, "assistant" if text == "noted" else "user"))
    await bob.aput(msg("my cat is called Felix"))
    got = await alice.aget(input="what is my cat called")
    system = " ".join(m.content or "" for m in got if m.role == "system")
    assert "Tom" in system and "Felix" not in system
    bob_got = await bob.aget(input="what is my cat called")
    assert "Tom" not in " ".join(m.content or "" for m in bob_got)
    assert [n.metadata for n in MuxiVectorStore(backend, ALICE).get_nodes()] == [
        {"session_id": "sess_v"}
    ]
