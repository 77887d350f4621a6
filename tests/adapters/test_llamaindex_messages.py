"""LlamaIndex ChatMessage <-> neutral records: exact round trips and records from elsewhere."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    CacheControl,
    CachePoint,
    ChatMessage,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
    VideoBlock,
)

from muxi_isolation.adapters.llamaindex import to_chat_message, to_message
from muxi_isolation.records import Message

OPENAI_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "search", "arguments": '{"q":  "jazz", "n": 3}'},
}

ROUND_TRIPS: list[ChatMessage] = [
    ChatMessage(role="user", content="hello"),
    ChatMessage(),
    ChatMessage(content=""),
    ChatMessage(role="system", content="be brief"),
    ChatMessage(role="developer", content="dev"),
    ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [OPENAI_CALL]}),
    ChatMessage(
        role="assistant",
        blocks=[
            TextBlock(text="calling"),
            ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={"a": 1}),
            ToolCallBlock(tool_name="g"),
        ],
    ),
    ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="f", tool_kwargs='{"bad')]),
    ChatMessage(role="tool", content="42", additional_kwargs={"tool_call_id": "c1", "name": "f"}),
    ChatMessage(role="function", content="r", additional_kwargs={"name": "legacy"}),
    ChatMessage(
        role="user",
        blocks=[TextBlock(text="look"), ImageBlock(url="https://x.org/a.png", detail="high")],
    ),
    ChatMessage(role="user", blocks=[ImageBlock(image=b"\x89PNG\r\n\x1a\n0000")]),
    ChatMessage(role="user", blocks=[ImageBlock(path=__file__, image_mimetype="image/jpeg")]),
    ChatMessage(
        role="user",
        blocks=[
            DocumentBlock(url="https://x.org/y.pdf", title="y"),
            DocumentBlock(data=b"%PDF-1.4 tiny"),
            AudioBlock(url="https://x.org/s.mp3"),
            VideoBlock(url="https://x.org/v.mp4", fps=2),
        ],
    ),
    ChatMessage(
        role="assistant",
        blocks=[
            ThinkingBlock(content="hmm", num_tokens=3, additional_information={"sig": "s"}),
            TextBlock(text="done"),
            CachePoint(cache_control=CacheControl(type="ephemeral")),
        ],
    ),
    ChatMessage(role="user", content="x", additional_kwargs={"k": [1, {"y": None}], "z": 1.5}),
    ChatMessage(role="user", content="x", additional_kwargs={"llama_index": "a user key"}),
    ChatMessage(role="user", content="x", additional_kwargs={"tool_calls": "not a list"}),
]


@pytest.mark.parametrize("message", ROUND_TRIPS, ids=lambda m: f"{m.role.value}")
def test_round_trip_is_exact(message: ChatMessage) -> None:
    back = to_chat_message(to_message(message))
    assert back.model_dump(mode="json") == message.model_dump(mode="json")


def test_plain_text_is_a_string_and_carries_no_extras() -> None:
    record = to_message(ChatMessage(role="assistant", content="hi"))
    assert record == Message("assistant", "hi", {}, [])


def test_tool_calls_are_neutral_from_both_llamaindex_shapes() -> None:
    legacy = to_message(
        ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [OPENAI_CALL]})
    )
    assert legacy.tool_calls == [{"id": "call_1", "name": "search", "args": {"q": "jazz", "n": 3}}]
    blocks = to_message(
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="c2", tool_name="calc", tool_kwargs='{"x": 2}')],
        )
    )
    assert blocks.tool_calls == [{"id": "c2", "name": "calc", "args": {"x": 2}}]
    assert blocks.content == []


def test_neutral_keys_sit_where_other_frameworks_look() -> None:
    record = to_message(
        ChatMessage(role="tool", content="ok", additional_kwargs={"tool_call_id": "c"})
    )
    assert record.role == "tool"
    assert record.metadata == {"tool_call_id": "c"}
    image = to_message(ChatMessage(blocks=[ImageBlock(url="https://x.org/a.png")]))
    assert image.content == [
        {"type": "image", "url": "https://x.org/a.png", "mime_type": "image/png"}
    ]


FOREIGN: list[tuple[Message, dict[str, Any]]] = [
    (Message("user", "hi"), {"role": "user", "blocks": [{"block_type": "text", "text": "hi"}]}),
    (Message("human", "hi"), {"role": "user", "blocks": [{"block_type": "text", "text": "hi"}]}),
    (
        Message("assistant", "", tool_calls=[{"id": "c", "name": "f", "args": {"a": 1}}]),
        {
            "role": "assistant",
            "blocks": [
                {"block_type": "text", "text": ""},
                {
                    "block_type": "tool_call",
                    "tool_call_id": "c",
                    "tool_name": "f",
                    "tool_kwargs": {"a": 1},
                },
            ],
        },
    ),
    (
        Message("user", [{"type": "image_url", "image_url": {"url": "https://x.org/p.png"}}]),
        {"role": "user", "blocks": [{"block_type": "image", "url": "https://x.org/p.png"}]},
    ),
    (
        Message("user", [{"type": "text", "text": "a"}, {"type": "mystery", "v": 1}]),
        {
            "role": "user",
            "additional_kwargs": {"unconverted_blocks": [{"type": "mystery", "v": 1}]},
            "blocks": [{"block_type": "text", "text": "a"}],
        },
    ),
    (
        Message("critic", "meh", {"langchain": {"type": "chat"}, "name": "bob"}),
        {
            "role": "user",
            "additional_kwargs": {"name": "bob", "role": "critic"},
            "blocks": [{"block_type": "text", "text": "meh"}],
        },
    ),
]


@pytest.mark.parametrize(("record", "expected"), FOREIGN, ids=lambda v: getattr(v, "role", ""))
def test_records_written_elsewhere(record: Message, expected: dict[str, Any]) -> None:
    got = to_chat_message(record)
    want = ChatMessage.model_validate(expected)
    assert got.model_dump(mode="json") == want.model_dump(mode="json")


def test_history_written_by_langchain_reads_here_and_back() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from muxi_isolation.adapters.langchain import from_record, to_record

    lc = [
        HumanMessage("what is 6*7?"),
        AIMessage("", tool_calls=[{"name": "calc", "args": {"expr": "6*7"}, "id": "c1"}]),
        ToolMessage("42", tool_call_id="c1"),
        AIMessage("42"),
    ]
    li = [to_chat_message(to_record(m)) for m in lc]
    assert [m.role for m in li] == [
        MessageRole.USER,
        MessageRole.ASSISTANT,
        MessageRole.TOOL,
        MessageRole.ASSISTANT,
    ]
    assert [b for b in li[1].blocks if isinstance(b, ToolCallBlock)] == [
        ToolCallBlock(tool_call_id="c1", tool_name="calc", tool_kwargs={"expr": "6*7"})
    ]
    assert li[2].additional_kwargs == {"tool_call_id": "c1"}
    assert all("langchain" not in m.additional_kwargs for m in li)
    # and LlamaIndex's own messages read through LangChain
    ai = from_record(to_message(li[1]))
    assert isinstance(ai, AIMessage)
    assert ai.tool_calls == [
        {"name": "calc", "args": {"expr": "6*7"}, "id": "c1", "type": "tool_call"}
    ]
