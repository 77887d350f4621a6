"""LangChain messages to and from the neutral ``Message`` record, as pure functions.

The neutral record is what every framework adapter reads, so a history written through
LangChain reads back through LlamaIndex and the reverse. The mapping:

    role        "user" (Human), "assistant" (AI), "system", "tool", "function", or a
                ChatMessage's own role
    content     the message content as is: a string or a list of content blocks
    tool_calls  an AI message's tool calls as ``{"id", "name", "args"}`` dicts
    metadata    neutral keys ``name`` (the speaker or function name) and ``tool_call_id``
                (on tool messages); the message's ``additional_kwargs``, flat, as the
                neutral metadata another framework reads (LlamaIndex's
                ``additional_kwargs``), except provider-encoded tool calls (``tool_calls``,
                ``function_call``: the neutral ``tool_calls`` carry them) and keys that would
                clash with neutral, private or reserved keys; everything only LangChain
                knows (message type and id, those kept kwargs, response/usage metadata,
                invalid tool calls, a tool message's artifact and status, ...) under
                ``metadata["langchain"]``, with fields still at their default left out.

A record carrying ``metadata["langchain"]`` whose type agrees with its role comes back
exactly as it was written. Any other record (written by another framework) is rebuilt from
role, content, tool calls and the neutral keys; its other metadata keys land in
``additional_kwargs`` so nothing is dropped, except another adapter's private extras
(LlamaIndex's ``metadata["llama_index"]``), which stay in the record but are not handed to
LangChain, whose model integrations may pass ``additional_kwargs`` on to a provider.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    BaseMessage,
    BaseMessageChunk,
    message_chunk_to_message,
    message_to_dict,
    messages_from_dict,
)

from muxi_isolation.errors import InvalidInput
from muxi_isolation.policy import RESERVED_KEYS
from muxi_isolation.records import Message

__all__ = ["EXTRAS_KEY", "NEUTRAL_KEYS", "from_record", "to_record"]

EXTRAS_KEY = "langchain"
NEUTRAL_KEYS = ("name", "tool_call_id")
_PRIVATE_KEYS = frozenset({EXTRAS_KEY, "llama_index"})
# additional_kwargs keys that stay with the LangChain extras instead of the neutral metadata.
_KEPT_KWARGS = (
    frozenset(NEUTRAL_KEYS) | _PRIVATE_KEYS | RESERVED_KEYS | {"tool_calls", "function_call"}
)

# LangChain message type -> neutral role ("chat" keeps its own role).
_ROLES = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "function",
    "FunctionMessageChunk": "function",
    "chat": None,
}
_AI_TYPES = ("ai", "AIMessageChunk")
_TYPE_FOR_ROLE = {"user": "human", "assistant": "ai", "system": "system"}
_TOOL_TYPES = ("tool", "ToolMessageChunk")


def _neutral_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": call.get("id"), "name": call["name"], "args": call.get("args", {})}


def _lc_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": call.get("name", ""),
        "args": call.get("args") or {},
        "id": call.get("id"),
        "type": "tool_call",
    }


_NO_DEFAULT = object()


@functools.cache
def _defaults(kind: type[BaseMessage]) -> dict[str, Any]:
    """A message class's field defaults, read once: pydantic inspects a default factory's
    signature on every ``get_default``, which took a third of a history append."""
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in kind.model_fields.items()
    }


def _non_default(message: BaseMessage, data: dict[str, Any]) -> dict[str, Any]:
    defaults = _defaults(type(message))
    return {k: v for k, v in data.items() if defaults.get(k, _NO_DEFAULT) != v}


def to_record(message: BaseMessage) -> Message:
    """The neutral record for one LangChain message (not yet stamped with a scope)."""
    if not isinstance(message, BaseMessage):
        raise InvalidInput(
            f"expected a LangChain message, got {type(message).__name__}", field="message"
        )
    if isinstance(message, BaseMessageChunk) and message.type not in _ROLES:
        message = message_chunk_to_message(message)
    if message.type not in _ROLES:
        raise InvalidInput(
            f"a {message.type!r} message cannot be stored in a chat history", field="message"
        )
    data = message_to_dict(message)["data"]
    data.pop("type", None)
    content = data.pop("content")
    tool_calls = data.pop("tool_calls", None) or []
    role = _ROLES[message.type] or data.pop("role")
    metadata: dict[str, Any] = {}
    for key in NEUTRAL_KEYS:
        value = data.pop(key, None)
        if value is not None:
            metadata[key] = value
    extras = {"type": message.type, **_non_default(message, data)}
    kwargs = extras.pop("additional_kwargs", None) or {}
    metadata.update((k, v) for k, v in kwargs.items() if k not in _KEPT_KWARGS)
    kept = {k: v for k, v in kwargs.items() if k in _KEPT_KWARGS}
    if kept:
        extras["additional_kwargs"] = kept
    metadata[EXTRAS_KEY] = extras
    return Message(role, content, metadata, [_neutral_tool_call(c) for c in tool_calls])


def _flat(record: Message) -> dict[str, Any]:
    """The record's metadata beyond the neutral keys and any adapter's private extras."""
    return {
        k: v for k, v in record.metadata.items() if k not in NEUTRAL_KEYS and k not in _PRIVATE_KEYS
    }


def _own_extras(record: Message) -> dict[str, Any] | None:
    extras = record.metadata.get(EXTRAS_KEY)
    if not isinstance(extras, Mapping):
        return None
    kind = extras.get("type")
    if kind not in _ROLES:
        return None
    expected = _ROLES[kind]
    if expected is not None and expected != record.role:
        return None  # another framework changed the role: trust the record, not the extras
    return dict(extras)


def _foreign(record: Message, neutral: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Type and fields for a record another framework wrote."""
    data = dict(neutral)
    if record.role in _TYPE_FOR_ROLE:
        kind = _TYPE_FOR_ROLE[record.role]
    elif record.role == "tool" and data.get("tool_call_id"):
        kind = "tool"
    elif record.role == "function" and data.get("name"):
        kind = "function"
    else:
        kind, data["role"] = "chat", record.role
    others = _flat(record)
    if record.tool_calls and kind not in _AI_TYPES:
        others["tool_calls"] = record.tool_calls
    if others:
        data["additional_kwargs"] = others
    return kind, data


def from_record(record: Message) -> BaseMessage:
    """The LangChain message a neutral record stands for."""
    neutral = {k: record.metadata[k] for k in NEUTRAL_KEYS if record.metadata.get(k) is not None}
    extras = _own_extras(record)
    if extras is None:
        kind, data = _foreign(record, neutral)
    else:
        kind = extras.pop("type")
        data = {**extras, **neutral}
        flat = _flat(record)
        if flat:
            data["additional_kwargs"] = {**(extras.get("additional_kwargs") or {}), **flat}
        if kind == "chat":
            data["role"] = record.role
    if kind not in _TOOL_TYPES:
        data.pop("tool_call_id", None)
    data["content"] = record.content
    if kind in _AI_TYPES:
        data["tool_calls"] = [_lc_tool_call(c) for c in record.tool_calls]
    return messages_from_dict([{"type": kind, "data": data}])[0]
