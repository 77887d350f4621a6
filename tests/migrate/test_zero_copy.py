"""Zero-copy between frameworks: what LangChain wrote, LlamaIndex reads, and the reverse.

Same backend, same scope, no copying: the adapters share one neutral record. Checked on
every backend, for chat histories (``MuxiChatMessageHistory`` <-> ``MuxiChatStore`` and
``MuxiDBChatStore``) and for memories (the two ``MuxiVectorStore``s, one embedding).
"""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import (
    ChatMessage as LCChatMessage,
)
from llama_index.core.base.llms.types import ImageBlock, TextBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import TextNode
from llama_index.core.storage.chat_store.base_db import MessageStatus
from llama_index.core.vector_stores.types import VectorStoreQuery

from muxi_isolation import Backend, Scope, SessionManager
from muxi_isolation.adapters.langchain import (
    HashingEmbeddings,
    MuxiChatMessageHistory,
)
from muxi_isolation.adapters.langchain import (
    MuxiVectorStore as LCVectorStore,
)
from muxi_isolation.adapters.llamaindex import (
    MuxiChatStore,
    MuxiDBChatStore,
)
from muxi_isolation.adapters.llamaindex import (
    MuxiVectorStore as LIVectorStore,
)

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
EMBED = HashingEmbeddings(64)

LANGCHAIN_HISTORY: list[BaseMessage] = [
    SystemMessage("You are terse."),
    HumanMessage("What's 6 times 7?", name="alice", additional_kwargs={"lang": "en", "n": [1, 2]}),
    AIMessage(
        "Let me compute.",
        tool_calls=[{"id": "call_1", "name": "multiply", "args": {"a": 6, "b": 7}}],
        response_metadata={"model_name": "fake"},
        id="run-1",
    ),
    ToolMessage("42", tool_call_id="call_1", name="multiply"),
    AIMessage([{"type": "text", "text": "It is 42."}]),
    LCChatMessage("Too slow.", role="critic"),
]


def li_view(message: ChatMessage) -> dict[str, Any]:
    return message.model_dump(mode="json")


def test_langchain_history_reads_back_through_llamaindex(backend: Backend) -> None:
    sessions = SessionManager(backend)
    sessions.create(ALICE, "s1")
    history = MuxiChatMessageHistory(backend, ALICE.with_session("s1"), sessions)
    history.add_messages(LANGCHAIN_HISTORY)

    got = [li_view(m) for m in MuxiChatStore(backend, ALICE).get_messages("s1")]
    assert [m["role"] for m in got] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert got[0]["blocks"] == [{"block_type": "text", "text": "You are terse."}]
    assert got[1]["additional_kwargs"] == {"name": "alice", "lang": "en", "n": [1, 2]}
    assert got[2]["blocks"] == [
        {"block_type": "text", "text": "Let me compute."},
        {
            "block_type": "tool_call",
            "tool_call_id": "call_1",
            "tool_name": "multiply",
            "tool_kwargs": {"a": 6, "b": 7},
        },
    ]
    assert got[3]["additional_kwargs"] == {"name": "multiply", "tool_call_id": "call_1"}
    assert got[3]["blocks"] == [{"block_type": "text", "text": "42"}]
    assert got[4]["blocks"] == [{"block_type": "text", "text": "It is 42."}]
    assert got[5]["additional_kwargs"] == {"role": "critic"}  # LlamaIndex has no such role

    import asyncio

    db = asyncio.run(MuxiDBChatStore(backend, ALICE).get_messages("s1"))
    assert [li_view(m) for m in db] == got
    assert MuxiChatStore(backend, ALICE).get_keys() == ["s1"]
    # reading through LlamaIndex changed nothing: LangChain still gets its exact messages
    assert history.messages == LANGCHAIN_HISTORY
    assert MuxiChatStore(backend, BOB).get_messages("s1") == []  # same key, other user


LLAMAINDEX_HISTORY = [
    ChatMessage(role="system", content="Answer in French."),
    ChatMessage(role="user", content="Bonjour", additional_kwargs={"trace": "t-1"}),
    ChatMessage(
        role="assistant",
        blocks=[
            TextBlock(text="Je cherche."),
            ToolCallBlock(tool_call_id="c9", tool_name="lookup", tool_kwargs={"q": "météo"}),
        ],
    ),
    ChatMessage(role="tool", content="soleil", additional_kwargs={"tool_call_id": "c9"}),
    ChatMessage(
        role="user",
        blocks=[TextBlock(text="Et ça ?"), ImageBlock(url="https://example.com/a.png")],
    ),
    ChatMessage(role="assistant", content="Un chat."),
]


async def test_llamaindex_history_reads_back_through_langchain(backend: Backend) -> None:
    store = MuxiDBChatStore(backend, ALICE)
    await store.add_messages("s2", LLAMAINDEX_HISTORY[:2], status=MessageStatus.ARCHIVED)
    await store.add_messages("s2", LLAMAINDEX_HISTORY[2:])
    history = MuxiChatMessageHistory(backend, ALICE.with_session("s2"))

    got = await history.aget_messages()  # the active ones, as LangChain's history shows
    assert [type(m).__name__ for m in got] == [
        "AIMessage",
        "ToolMessage",
        "HumanMessage",
        "AIMessage",
    ]
    assert got[0].content == "Je cherche."
    assert got[0].tool_calls == [
        {"name": "lookup", "args": {"q": "météo"}, "id": "c9", "type": "tool_call"}
    ]
    assert isinstance(got[1], ToolMessage) and got[1].tool_call_id == "c9"
    assert got[2].content == [
        {"type": "text", "text": "Et ça ?"},
        {"type": "image", "url": "https://example.com/a.png", "mime_type": "image/png"},
    ]
    everything = backend.get_messages(ALICE.with_session("s2"))
    assert [m.status for m in everything] == ["archived"] * 2 + ["active"] * 4
    assert everything[1].metadata == {"trace": "t-1"}
    assert [li_view(m) for m in await store.get_messages("s2", status=None)] == [
        li_view(m) for m in LLAMAINDEX_HISTORY
    ]  # and LlamaIndex reads back exactly what it wrote


def test_chat_store_writes_read_back_through_langchain_with_metadata(backend: Backend) -> None:
    MuxiChatStore(backend, ALICE).set_messages("s3", LLAMAINDEX_HISTORY[:2])
    history = MuxiChatMessageHistory(backend, ALICE.with_session("s3"))
    assert history.messages == [
        SystemMessage("Answer in French."),
        HumanMessage("Bonjour", additional_kwargs={"trace": "t-1"}),
    ]
    assert MuxiChatMessageHistory(backend, BOB.with_session("s3")).messages == []


def test_memories_written_by_langchain_are_found_by_llamaindex(backend: Backend) -> None:
    lc = LCVectorStore(backend, EMBED, scope=ALICE)
    texts = ["alice likes jazz records", "alice flies to Lisbon", "alice hates olives"]
    lc.add_texts(
        texts, [{"topic": "music"}, {"topic": "travel"}, {"topic": "food"}], ids=["m1", "m2", "m3"]
    )
    LCVectorStore(backend, EMBED, scope=BOB).add_texts(["bob likes jazz too"], ids=["b1"])

    li = LIVectorStore(backend, ALICE)
    query = VectorStoreQuery(query_embedding=EMBED.embed_query("jazz records"), similarity_top_k=3)
    result = li.query(query)
    assert result.ids is not None and result.ids[0] == "m1"
    assert set(result.ids) == {"m1", "m2", "m3"}
    assert result.nodes is not None
    first = result.nodes[0]
    assert first.get_content() == "alice likes jazz records"
    assert first.metadata == {"topic": "music"}
    visible = li.get_nodes(node_ids=["m1", "m2", "m3", "b1"])
    assert {n.node_id for n in visible} == {"m1", "m2", "m3"}


def test_memories_written_by_llamaindex_are_found_by_langchain(backend: Backend) -> None:
    nodes = [
        TextNode(
            id_=f"n{i}", text=text, metadata={"topic": topic}, embedding=EMBED.embed_query(text)
        )
        for i, (text, topic) in enumerate(
            [("bob plays the cello", "music"), ("bob lives in Porto", "home")]
        )
    ]
    LIVectorStore(backend, BOB).add(nodes)
    LIVectorStore(backend, ALICE).add(
        [TextNode(id_="a0", text="alice plays the cello", embedding=EMBED.embed_query("cello"))]
    )
    lc = LCVectorStore(backend, EMBED, scope=BOB)
    found: list[Document] = lc.similarity_search("cello", k=5)
    assert [d.id for d in found] == ["n0", "n1"]  # only bob's, best first, all of them
    assert found[0].page_content == "bob plays the cello"
    assert found[0].metadata["topic"] == "music"
    assert [d.id for d in lc.similarity_search("cello", k=1, filter={"topic": "home"})] == ["n1"]
    assert [d.page_content for d in lc.get_by_ids(["n1", "a0"])] == ["bob lives in Porto"]


def test_both_frameworks_offline_embeddings_agree() -> None:
    """A memory embedded through one framework's test embedding is found through the
    other's: both wrap muxi_isolation.hashing.hashing_vector."""
    from muxi_isolation.adapters.langchain import HashingEmbeddings
    from muxi_isolation.adapters.llamaindex import HashingEmbedding

    text = "Alice likes jazz on Tuesdays"
    assert HashingEmbeddings(64).embed_query(text) == HashingEmbedding(dim=64).get_text_embedding(
        text
    )
