"""LlamaIndex chat stores: ``SimpleChatStore`` persist files and ``PostgresChatStore`` tables.

Both keep, per key, a list of ``ChatMessage`` dumps; each key becomes one conversation, each
message converted exactly as ``MuxiChatStore`` would store it. The key is the store's own
(``chat_store_key``: often one string per user and conversation, e.g.
``"tenant_a:user_1:chat42"``, which a template maps to its owner and session).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import TableClause, select
from sqlalchemy.engine import URL

from ...errors import UnreadableSource
from ...records import Message
from .._units import Broken, Conversation, Source, Unit
from ._adapters import llamaindex_to_message
from ._files import load_json
from ._sql import Database

__all__ = ["LlamaIndexPostgresChat", "LlamaIndexSimpleChat"]


def _conversation(key: str, dumps: Sequence[Any]) -> Unit:
    from llama_index.core.llms import ChatMessage

    to_message = llamaindex_to_message()
    messages: list[Message] = []
    for n, dump in enumerate(dumps, start=1):
        try:
            data = json.loads(dump) if isinstance(dump, str) else dump
            messages.append(to_message(ChatMessage.model_validate(data)))
        except Exception as exc:  # pydantic's and json's errors alike
            return Broken(key, f"message {n} is not a LlamaIndex ChatMessage: {exc}")
    return Conversation(key, messages)


class LlamaIndexSimpleChat(Source):
    """A ``SimpleChatStore.persist()`` file: ``{"store": {key: [message, ...]}, ...}``
    (or that JSON as a JSON string, as older versions wrote it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"llamaindex-simple-chat {self.path}"
        self.store: dict[str, Any] = {}

    def check(self) -> int:
        llamaindex_to_message()  # fails here, before any write, without the framework
        data = load_json(self.path)
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise UnreadableSource(f"{self.path} is not valid JSON: {exc}") from exc
        store = data.get("store") if isinstance(data, dict) else None
        if not isinstance(store, dict) or not all(isinstance(v, list) for v in store.values()):
            raise UnreadableSource(f"{self.path}: not a SimpleChatStore file (no 'store' of lists)")
        self.store = store
        return len(store)

    def units(self) -> Generator[Unit, None, None]:
        for key, dumps in self.store.items():
            yield _conversation(str(key), dumps)


class LlamaIndexPostgresChat(Source):
    """A llama-index ``PostgresChatStore`` table (``key`` VARCHAR, ``value`` JSON[] or
    JSONB[]), named as the store names it: lower-cased, or ``data_<name>`` for the legacy
    layout."""

    table: TableClause

    def __init__(self, url: str | URL, table: str = "chatstore", *, schema: str = "public") -> None:
        self.db = Database(url)
        self.table_name, self.schema = table.lower(), schema.lower()
        self.name = f"llamaindex-postgres-chat {self.schema}.{self.table_name}"

    def check(self) -> int:
        llamaindex_to_message()
        names = [self.table_name, f"data_{self.table_name}"]
        self.table, _ = self.db.require(self.schema, names, ["key", "value"])
        return self.db.count(self.table)

    def units(self) -> Generator[Unit, None, None]:
        t = self.table
        for row in self.db.stream(select(t.c.key, t.c.value).order_by(t.c.key)):
            yield _conversation(str(row.key), list(row.value or []))

    def close(self) -> None:
        self.db.close()
