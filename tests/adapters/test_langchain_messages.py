"""LangChain messages <-> neutral records: exact round trips, and records from elsewhere."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from muxi_isolation.adapters.langchain import from_record, to_record
from muxi_isolation.errors import InvalidInput
from muxi_isolation.records import Message

ROUND_TRIPS: list[BaseMessage] = [
    HumanMessage("hello"),
    HumanMessage("hi", id="m1", name="ann", additional_kwargs={"k": [1, {"x": None}]}),
    HumanMessage([{"type": "text", "text": "look"}, {"type": "image", "url": "http://x/y.png"}]),
    AIMessage("plain answer", response_metadata={"model_name": "m", "finish_reason": "stop"}),
    AIMessage(
        "",
        id="run-1",
        tool_calls=[
            {"name": "search", "args": {"q": "jazz", "n": 3}, "id": "call_1"},
            {"name": "calc", "args": {}, "id": None},
        ],
        invalid_tool_calls=[
            {
                "name": "bad",
                "args": "{oops",
                "id": "call_2",
                "error": "not JSON",
                "type": "invalid_tool_call",
            }
        ],
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        additional_kwargs={"refusal": None},
    ),
    AIMessage([{"type": "text", "text": "blocks"}, {"type": "reasoning", "reasoning": "r"}]),
    AIMessageChunk(
        "partial",
        tool_call_chunks=[{"name": "f", "args": '{"a": 1}', "id": "c9", "index": 0}],
    ),
    SystemMessage("be brief"),
    SystemMessage([{"type": "text", "text": "block system"}], name="policy"),
    ToolMessage("42", tool_call_id="call_1"),
    ToolMessage(
        "boom", tool_call_id="call_3", artifact={"rows": [1, 2]}, status="error", name="search"
    ),
    FunctionMessage("result", name="legacy_fn"),
    ChatMessage("critique", role="critic"),
    ChatMessage("looks like a human", role="user"),
]


@pytest.mark.parametrize("message", ROUND_TRIPS, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(message: BaseMessage) -> None:
    record = to_record(message)
    back = from_record(record)
    assert type(back) is type(message)
    assert back == message


@pytest.mark.parametrize(
    ("message", "role"),
    [
        (HumanMessage("x"), "user"),
        (AIMessage("x"), "assistant"),
        (SystemMessage("x"), "system"),
        (ToolMessage("x", tool_call_id="c"), "tool"),
        (FunctionMessage("x", name="f"), "function"),
        (ChatMessage("x", role="critic"), "critic"),
    ],
)
def test_neutral_roles(message: BaseMessage, role: str) -> None:
    assert to_record(message).role == role


def test_neutral_fields_are_readable_without_langchain() -> None:
    record = to_record(
        AIMessage("", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}], name="bot")
    )
    assert record.tool_calls == [{"id": "c1", "name": "search", "args": {"q": "x"}}]
    assert record.metadata["name"] == "bot"
    tool = to_record(ToolMessage("ok", tool_call_id="c1"))
    assert tool.role == "tool" and tool.metadata["tool_call_id"] == "c1"
    assert tool.content == "ok"


def test_defaults_are_not_stored() -> None:
    assert to_record(HumanMessage("x")).metadata == {"langchain": {"type": "human"}}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (Message("user", "hi"), HumanMessage("hi")),
        (Message("assistant", "yo", {"name": "bot"}), AIMessage("yo", name="bot")),
        (Message("system", "rules"), SystemMessage("rules")),
        (
            Message("assistant", "", tool_calls=[{"id": "c", "name": "f", "args": {"a": 1}}]),
            AIMessage("", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c"}]),
        ),
        (Message("tool", "42", {"tool_call_id": "c"}), ToolMessage("42", tool_call_id="c")),
        (Message("tool", "42"), ChatMessage("42", role="tool")),
        (Message("function", "r", {"name": "f"}), FunctionMessage("r", name="f")),
        (Message("developer", "d"), ChatMessage("d", role="developer")),
        (
            Message("user", "hi", {"trace": "t1", "llama_index": {"blocks": []}}),
            HumanMessage("hi", additional_kwargs={"trace": "t1"}),
        ),
        # another framework rewrote the role: the record wins over stale LangChain extras
        (Message("user", "hi", {"langchain": {"type": "ai"}}), HumanMessage("hi")),
    ],
    ids=lambda v: v.role if isinstance(v, Message) else "",
)
def test_records_from_other_writers(record: Message, expected: BaseMessage) -> None:
    assert from_record(record) == expected


def test_chunks_without_a_stored_type_become_messages() -> None:
    assert from_record(to_record(ChatMessageChunk("c", role="critic"))) == ChatMessage(
        "c", role="critic"
    )


def test_not_a_chat_message() -> None:
    with pytest.raises(ValueError, match="cannot be stored"):
        to_record(RemoveMessage(id="m1"))
    with pytest.raises(InvalidInput):
        to_record("hello")  # type: ignore[arg-type]
