"""langchain-postgres ``PostgresChatMessageHistory`` tables: one conversation per session.

The table (``id SERIAL, session_id UUID, message JSONB, created_at TIMESTAMPTZ``) holds
every session of every user in one place; its ``message`` column is LangChain's
``message_to_dict`` form. Each session becomes one conversation, in ``id`` order, each
message converted exactly as ``MuxiChatMessageHistory`` would store it, with its
``created_at``. The key is the session id (a UUID string).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

from sqlalchemy import TableClause, func, select
from sqlalchemy.engine import URL

from ...records import Message
from .._units import Broken, Conversation, Source, Unit
from ._adapters import langchain_to_record
from ._sql import Database

__all__ = ["LangChainPostgresHistory"]


class LangChainPostgresHistory(Source):
    table: TableClause
    timed: bool

    def __init__(self, url: str | URL, table: str, *, schema: str | None = None) -> None:
        self.db = Database(url)
        self.table_name, self.schema = table, schema
        self.name = f"langchain-postgres-history {schema + '.' if schema else ''}{table}"

    def check(self) -> int:
        langchain_to_record()  # fails here, before any write, without the framework
        self.table, columns = self.db.require(
            self.schema, [self.table_name], ["id", "session_id", "message"]
        )
        self.timed = "created_at" in columns
        query = select(func.count(self.table.c.session_id.distinct())).select_from(self.table)
        return int(self.db.scalar(query))

    def units(self) -> Generator[Unit, None, None]:
        t = self.table
        fields = [t.c.session_id, t.c.message] + ([t.c.created_at] if self.timed else [])
        query = select(*fields).order_by(t.c.session_id, t.c.id)
        key: str | None = None
        rows: list[Any] = []
        for row in self.db.stream(query):
            sid = str(row.session_id)
            if sid != key and key is not None:
                yield _conversation(key, rows)
                rows = []
            key = sid
            rows.append(row)
        if key is not None:
            yield _conversation(key, rows)

    def close(self) -> None:
        self.db.close()


def _conversation(key: str, rows: list[Any]) -> Unit:
    from langchain_core.messages import messages_from_dict

    to_record = langchain_to_record()
    messages: list[Message] = []
    for n, row in enumerate(rows, start=1):
        try:
            record = to_record(messages_from_dict([row.message])[0])
        except Exception as exc:  # LangChain raises plain errors on malformed dicts
            return Broken(key, f"message {n} is not a LangChain message: {exc}")
        created = getattr(row, "created_at", None)
        messages.append(record if created is None else replace(record, created_at=created))
    return Conversation(key, messages)
