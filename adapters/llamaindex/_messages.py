"""LlamaIndex ``ChatMessage`` <-> the neutral ``Message`` record, as pure functions.

The neutral shape is what every framework reads, so a history written here reads back
through LangChain without copying:

- ``role``: ``user``, ``assistant``, ``system``, ``tool``, ... (LlamaIndex's role values);
- ``content``: a string for a message that is one text block, otherwise a list of blocks in
  LangChain's standard shape (``{"type": "text", "text": ...}``, ``{"type": "image",
  "url": ...}``, ``{"type": "file", ...}``, ``{"type": "reasoning", ...}``; anything else as
  ``{"type": "non_standard", "value": {"llama_index": <block>}}``);
- ``tool_calls``: ``[{"id", "name", "args"}]``, from ``ToolCallBlock`` blocks and from the
  OpenAI-style ``additional_kwargs["tool_calls"]``;
- ``metadata``: the remaining ``additional_kwargs``, flat (so ``tool_call_id`` and ``name``
  are where another framework looks for them).

Reading a record another framework wrote: ``human``/``ai`` roles are understood, a role
LlamaIndex does not have becomes ``user`` with the original in ``additional_kwargs["role"]``,
LangChain's private ``metadata["langchain"]`` is left out, and content blocks with no
LlamaIndex equivalent are kept in ``additional_kwargs["unconverted_blocks"]``.

The conversion is exact for LlamaIndex messages (equal ``model_dump(mode="json")``): after
building the neutral record we rebuild the message from it, and whatever did not survive
(an unusual block field, raw tool calls) is kept verbatim under ``metadata["llama_index"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from muxi_isolation.errors import InvalidInput
from muxi_isolation.records import Message

__all__ = ["FOREIGN_KEYS", "LLAMA_INDEX_KEY", "to_chat_message", "to_message"]

LLAMA_INDEX_KEY = "llama_index"
_ROLE_ALIASES = {"human": "user", "ai": "assistant"}
_ROLES = frozenset(r.value for r in MessageRole)
# Another adapter's private extras (LangChain's message type, ids, usage, ...): kept in the
# record, but not handed to LlamaIndex, whose LLM integrations may send additional_kwargs on.
FOREIGN_KEYS = frozenset({"langchain"})
_UNCONVERTED = "unconverted_blocks"


def to_message(message: ChatMessage) -> Message:
    """The neutral record of a LlamaIndex message (not yet stamped with a scope)."""
    if not isinstance(message, ChatMessage):  # as the LangChain adapter answers
        raise InvalidInput(
            f"expected a LlamaIndex ChatMessage, got {type(message).__name__}", field="message"
        )
    dump = message.model_dump(mode="json")
    kwargs: dict[str, Any] = dict(dump["additional_kwargs"])
    raw_calls = kwargs.pop("tool_calls", None)
    tool_calls: list[dict[str, Any]] = []
    blocks: list[Any] = []
    for block in dump["blocks"]:
        if block.get("block_type") == "tool_call":
            tool_calls.append(_call_from_block(block))
        else:
            blocks.append(_neutral_block(block))
    if isinstance(raw_calls, list):
        tool_calls.extend(c for c in map(_call_from_openai, raw_calls) if c is not None)
    elif raw_calls is not None:
        kwargs["tool_calls"] = raw_calls
    one_text = len(blocks) == 1 and blocks[0]["type"] == "text"
    content: Any = blocks[0]["text"] if one_text else blocks
    metadata = {k: v for k, v in kwargs.items() if k != LLAMA_INDEX_KEY}
    candidate = Message(dump["role"], content, metadata, tool_calls)
    patch = _patch(dump, candidate)
    if patch:
        metadata = {**metadata, LLAMA_INDEX_KEY: patch}
    return Message(dump["role"], content, metadata, tool_calls)


def to_chat_message(message: Message) -> ChatMessage:
    """A LlamaIndex message from a neutral record, whichever framework wrote it."""
    return ChatMessage.model_validate(_chat_dict(message))


def _patch(dump: dict[str, Any], candidate: Message) -> dict[str, Any]:
    try:
        rebuilt = to_chat_message(candidate).model_dump(mode="json")
    except (ValueError, TypeError):
        rebuilt = {}
    patch: dict[str, Any] = {}
    for field in ("blocks", "additional_kwargs"):
        if rebuilt.get(field) != dump[field]:
            patch[field] = dump[field]
    return patch


def _chat_dict(message: Message) -> dict[str, Any]:
    metadata = dict(message.metadata or {})
    patch = metadata.pop(LLAMA_INDEX_KEY, None)
    patch = patch if isinstance(patch, Mapping) else {}
    kwargs = {k: v for k, v in metadata.items() if k not in FOREIGN_KEYS}
    role = _ROLE_ALIASES.get(message.role, message.role)
    if role not in _ROLES:
        kwargs = {**kwargs, "role": role}
        role = MessageRole.USER.value
    if "blocks" in patch:
        blocks = list(patch["blocks"])
    else:
        blocks, unconverted = _blocks_from_neutral(message.content, message.tool_calls)
        if unconverted:
            kwargs = {**kwargs, _UNCONVERTED: unconverted}
    if "additional_kwargs" in patch:
        kwargs = dict(patch["additional_kwargs"])
    return {"role": role, "additional_kwargs": kwargs, "blocks": blocks}


# -- tool calls


def _call_from_block(block: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("tool_call_id"),
        "name": block.get("tool_name"),
        "args": _args(block.get("tool_kwargs")),
    }


def _call_from_openai(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, Mapping):
        return None
    if {"name", "args"} <= call.keys():  # already neutral (LangChain's ToolCall shape)
        return {"id": call.get("id"), "name": call["name"], "args": _args(call["args"])}
    function = call.get("function")
    if not isinstance(function, Mapping) or "name" not in function:
        return None
    return {
        "id": call.get("id"),
        "name": function["name"],
        "args": _args(function.get("arguments")),
    }


def _args(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


# -- content blocks, LlamaIndex -> neutral


def _some(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, {}, "")}


class _Media(NamedTuple):
    """One kind of media block, both ways: the neutral ``type``, LlamaIndex's ``block_type``,
    its fields for the inline data and the MIME type, and its fields kept as ``extras``."""

    type: str
    block_type: str
    data: str
    mime: str | None
    extras: tuple[str, ...]


_MEDIA = (
    _Media("image", "image", "image", "image_mimetype", ("detail", "path")),
    _Media("audio", "audio", "audio", None, ("format", "path")),
    _Media("video", "video", "video", "video_mimetype", ("detail", "fps", "path")),
    _Media("file", "document", "data", "document_mimetype", ("title", "path")),
)
_BY_TYPE = {m.type: m for m in _MEDIA}
_BY_BLOCK_TYPE = {m.block_type: m for m in _MEDIA}


def _neutral_block(block: Mapping[str, Any]) -> dict[str, Any]:
    kind = block.get("block_type")
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    media = _BY_BLOCK_TYPE.get(kind) if isinstance(kind, str) else None
    if media is not None:
        return {
            "type": media.type,
            **_some(
                url=block.get("url"),
                base64=block.get(media.data),
                mime_type=block.get(media.mime) if media.mime else None,
            ),
            **_some(extras=_some(**{name: block.get(name) for name in media.extras})),
        }
    if kind == "thinking":
        extras = _some(
            num_tokens=block.get("num_tokens"),
            additional_information=block.get("additional_information"),
        )
        return {
            "type": "reasoning",
            "reasoning": block.get("content") or "",
            **_some(extras=extras),
        }
    return {"type": "non_standard", "value": {LLAMA_INDEX_KEY: dict(block)}}


# -- content blocks, neutral -> LlamaIndex


def _blocks_from_neutral(
    content: Any, tool_calls: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Any]]:
    items = [content] if isinstance(content, str) else list(content or [])
    call_ids = {c.get("id") for c in tool_calls if c.get("id") is not None}
    blocks: list[dict[str, Any]] = []
    unconverted: list[Any] = []
    for item in items:
        if (
            isinstance(item, Mapping)
            and item.get("type") == "tool_call"
            and item.get("id") in call_ids
        ):
            continue  # the same call is in tool_calls
        block = _li_block(item)
        if block is None:
            unconverted.append(item)
        else:
            blocks.append(block)
    for call in tool_calls:
        blocks.append(_tool_block(call))
    return blocks, unconverted


def _tool_block(call: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "block_type": "tool_call",
        "tool_call_id": call.get("id"),
        "tool_name": call.get("name") or "",
        "tool_kwargs": call.get("args") or {},
    }


def _li_block(item: Any) -> dict[str, Any] | None:
    if isinstance(item, str):
        return {"block_type": "text", "text": item}
    if not isinstance(item, Mapping):
        return None
    kind = item.get("type")
    raw_extras = item.get("extras")
    extras: Mapping[str, Any] = raw_extras if isinstance(raw_extras, Mapping) else {}
    if kind == "text":
        return {"block_type": "text", "text": item.get("text", "")}
    if kind == "image_url":  # OpenAI / LangChain legacy shape
        url = item.get("image_url")
        detail = url.get("detail") if isinstance(url, Mapping) else None
        url = url.get("url") if isinstance(url, Mapping) else url
        return {"block_type": "image", "url": url, **_some(detail=detail)}
    media = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if media is not None:
        mime = {media.mime: item.get("mime_type")} if media.mime else {}
        return {
            "block_type": media.block_type,
            **_some(url=item.get("url"), **{media.data: item.get("base64")}, **mime),
            **_some(**{name: extras.get(name) for name in media.extras}),
        }
    if kind == "reasoning":
        return {
            "block_type": "thinking",
            "content": item.get("reasoning"),
            **_some(num_tokens=extras.get("num_tokens")),
            **_some(additional_information=extras.get("additional_information")),
        }
    if kind == "tool_call":
        return _tool_block(item)
    if kind == "non_standard":
        value = item.get("value")
        if isinstance(value, Mapping) and isinstance(value.get(LLAMA_INDEX_KEY), Mapping):
            return dict(value[LLAMA_INDEX_KEY])
    return None
