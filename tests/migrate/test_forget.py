"""Forgetting a user (or a tenant) leaves nothing of them anywhere.

The proof does not trust the backend's own reads: after forgetting, it scans every table
of the SQLite file and of the PostgreSQL schema (as the superuser, past row-level security)
for the user's ids and for a content string only that user ever wrote, including the
agent-graph tables (LangGraph checkpoints, writes, store items) and the message counters;
it reads the SQLite database and log files as bytes; and it walks the in-memory backend's
every container. The neighbours' rows must all still be there.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import text

from muxi_isolation import Backend, Memory, MemoryBackend, Message, Scope, SessionRecord
from muxi_isolation.adapters.langgraph import MuxiCheckpointer, MuxiStore
from muxi_isolation.migrate import aforget_tenant, aforget_user, forget_tenant, forget_user
from muxi_isolation.stores.sql import SQLBackend

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")


def secret(scope: Scope) -> str:
    return f"only-{scope.tenant_id}-{scope.user_id}-wrote-this-9c41"


def fill(backend: Backend, scope: Scope) -> None:
    """Something in every table: sessions, messages (and counters), memories, graph data."""
    text_ = secret(scope)
    backend.insert_session(scope, SessionRecord("s1", scope, T0, T0, T0 + timedelta(hours=1)))
    s1 = scope.with_session("s1")
    call = {"id": "c", "name": "f", "args": {"q": text_}}
    backend.append_messages(
        s1,
        [
            Message("user", text_, {"note": text_}),
            Message("assistant", [{"type": "text", "text": text_}], tool_calls=[call]),
        ],
    )
    backend.append_messages(scope.with_session("no_record"), [Message("user", text_)])
    backend.upsert_memories(s1, [Memory("m1", text_, {"why": text_}, [0.5, 0.5])])
    checkpointer = MuxiCheckpointer(backend, scope=scope)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": text_}
    config = checkpointer.put(
        {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}},
        checkpoint,
        {"source": "input", "step": -1, "note": text_},
        {},
    )
    checkpointer.put_writes(config, [("messages", text_)], task_id="task-1")
    MuxiStore(backend, scope=scope).put(("notes", scope.user_id), "k1", {"text": text_})


def found_in(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return needle.encode() in bytes(value)
    if isinstance(value, (dict, list)):
        return needle in repr(value)
    return False


def residue_sqlite(backend: SQLBackend, scope: Scope) -> list[str]:
    """Every row of every table in the file naming the user, or holding the secret."""
    path = backend._target.sync_url.database
    assert path is not None
    hits: list[str] = []
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert len(tables) >= 8  # sessions, messages, counters, memories, graph tables, ...
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            for row in cursor:
                cells = dict(zip(names, row, strict=True))
                mine = (cells.get("tenant_id"), cells.get("user_id")) == (
                    scope.tenant_id,
                    scope.user_id,
                )
                if mine or any(found_in(v, secret(scope)) for v in row):
                    hits.append(f"{table}: {row!r}")
    finally:
        db.close()
    for file in (Path(path), Path(f"{path}-wal")):
        if file.exists() and secret(scope).encode() in file.read_bytes():
            hits.append(f"bytes of {file.name}")
    return hits


def residue_postgres(backend: SQLBackend, admin: Any, scope: Scope) -> list[str]:
    schema = backend.tables.metadata.schema
    hits: list[str] = []
    with admin.connect() as conn:  # the superuser: row-level security does not hide rows
        tables = list(
            conn.scalars(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            )
        )
        assert len(tables) >= 8
        for table in tables:
            result = conn.execute(text(f'SELECT * FROM "{schema}"."{table}"'))
            for row in result.mappings():
                mine = (row.get("tenant_id"), row.get("user_id")) == (
                    scope.tenant_id,
                    scope.user_id,
                )
                if mine or any(found_in(v, secret(scope)) for v in row.values()):
                    hits.append(f"{table}: {dict(row)!r}")
    return hits


def residue_memory(backend: MemoryBackend, scope: Scope) -> list[str]:
    """Every container of the backend, walked: keys and values naming the user or secret."""
    hits: list[str] = []
    seen: set[int] = set()

    def walk(value: Any, where: str) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, tuple) and value[:2] == (scope.tenant_id, scope.user_id):
            hits.append(where)
        if isinstance(value, Scope) and value.same_user(scope):
            hits.append(where)
        if found_in(value, secret(scope)):
            hits.append(where)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, f"{where}[{k!r}]")
                walk(v, f"{where}[{k!r}]")
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{where}.{f.name}")
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            for name, v in vars(value).items():
                walk(v, f"{where}.{name}")

    walk(backend, "backend")
    return hits


def residue(backend: Backend, request: pytest.FixtureRequest, scope: Scope) -> list[str]:
    if isinstance(backend, MemoryBackend):
        return residue_memory(backend, scope)
    assert isinstance(backend, SQLBackend)
    if backend.dialect == "sqlite":
        return residue_sqlite(backend, scope)
    return residue_postgres(backend, request.getfixturevalue("postgres_admin"), scope)


def test_the_scans_see_what_is_there(backend: Backend, request: pytest.FixtureRequest) -> None:
    fill(backend, ALICE)  # the scans must find a live user everywhere, or they prove nothing
    hits = residue(backend, request, ALICE)
    assert len(hits) >= 8
    if isinstance(backend, SQLBackend):
        tables = {h.split(":")[0] for h in hits}
        assert {
            "muxi_sessions",
            "muxi_messages",
            "muxi_message_counters",
            "muxi_memories",
            "muxi_checkpoints",
            "muxi_checkpoint_writes",
            "muxi_store_items",
        } <= tables


def test_forget_user_leaves_no_residue(backend: Backend, request: pytest.FixtureRequest) -> None:
    for scope in (ALICE, BOB, ALICE_B):
        fill(backend, scope)
    report = forget_user(backend, "tenant_a:alice")
    assert report.to_dict() == {
        "user_id": "tenant_a:alice",
        "deleted": {
            "sessions": 2,
            "messages": 3,
            "memories": 1,
            "checkpoints": 1,
            "checkpoint_writes": 1,
            "store_items": 1,
        },
    }
    assert report.total == 9 and "forgot user tenant_a:alice" in report.format()
    assert residue(backend, request, ALICE) == []
    for other in (BOB, ALICE_B):  # the neighbours keep everything
        assert len(residue(backend, request, other)) >= 8
        assert len(backend.get_messages(other.with_session("s1"))) == 2
    again = forget_user(backend, ALICE)
    assert again.total == 0


async def test_aforget_user(backend: Backend, request: pytest.FixtureRequest) -> None:
    fill(backend, ALICE)
    fill(backend, BOB)
    report = await aforget_user(backend, ALICE)
    assert report.deleted["messages"] == 3 and report.deleted["checkpoints"] == 1
    assert residue(backend, request, ALICE) == []
    assert residue(backend, request, BOB)


def test_forget_tenant_leaves_no_residue(backend: Backend, request: pytest.FixtureRequest) -> None:
    for scope in (ALICE, BOB, ALICE_B):
        fill(backend, scope)
    report = forget_tenant(backend, "tenant_a")
    assert report.to_dict()["tenant_id"] == "tenant_a"
    assert report.deleted == {
        "sessions": 4,
        "messages": 6,
        "memories": 2,
        "checkpoints": 2,
        "checkpoint_writes": 2,
        "store_items": 2,
    }
    assert residue(backend, request, ALICE) == [] and residue(backend, request, BOB) == []
    assert len(residue(backend, request, ALICE_B)) >= 8
    assert backend.list_tenants() == ["tenant_b"]


async def test_aforget_tenant(backend: Backend) -> None:
    fill(backend, ALICE_B)
    report = await aforget_tenant(backend, "tenant_b")
    assert report.total == 9 and backend.list_tenants() == []


def test_a_reader_holding_the_log_delays_the_scrub_not_the_forget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "busy.db"
    backend = SQLBackend(f"sqlite:///{path}", embedding_dimension=None, busy_timeout=0.2)
    try:
        fill(backend, ALICE)
        fill(backend, BOB)
        reader = sqlite3.connect(path)  # another process's long read keeps the log in use
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM muxi_memories").fetchone() == (2,)
        with caplog.at_level(logging.WARNING, logger="muxi_isolation.stores.sql"):
            report = forget_user(backend, ALICE)
        assert report.total == 9
        assert "the SQLite log could not be emptied now" in caplog.text
        assert backend.list_memories(ALICE) == [] and len(backend.list_memories(BOB)) == 1
        assert residue_sqlite(backend, ALICE) == ["bytes of busy.db-wal"]  # old log frames
        reader.rollback()
        reader.close()
        assert forget_user(backend, ALICE).total == 0  # the next forget empties the log
        assert residue_sqlite(backend, ALICE) == []
        assert len(residue_sqlite(backend, BOB)) >= 8
    finally:
        backend.close()
