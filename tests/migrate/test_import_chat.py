"""Importing chat histories from stores that know nothing of users.

Real sources, built with their own packages: langchain-postgres
``PostgresChatMessageHistory`` tables, LlamaIndex ``SimpleChatStore`` files and llama-index
``PostgresChatStore`` tables (their PostgreSQL in a database of its own). Each import maps
keys to owners, and what it wrote reads back through our adapters as the source had it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_postgres import PostgresChatMessageHistory
from llama_index.core.base.llms.types import TextBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.storage.chat_store.postgres import PostgresChatStore
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from muxi_isolation import Backend, Scope, SessionManager, UnreadableSource
from muxi_isolation.adapters.langchain import MuxiChatMessageHistory, MuxiHistoryFactory
from muxi_isolation.adapters.llamaindex import MuxiChatStore, MuxiDBChatStore
from muxi_isolation.migrate import run_import
from muxi_isolation.migrate.sources import (
    LangChainPostgresHistory,
    LlamaIndexPostgresChat,
    LlamaIndexSimpleChat,
)

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")
NOBODY = Scope("default", "0")  # what a careless importer would fall back to

SID = {name: str(uuid.UUID(int=i + 1)) for i, name in enumerate("abcde")}


def conversation(n: int) -> list[BaseMessage]:
    return [
        SystemMessage("be brief"),
        HumanMessage(f"question {n}", additional_kwargs={"n": n}),
        AIMessage("", tool_calls=[{"id": f"c{n}", "name": "search", "args": {"q": n}}]),
        ToolMessage(f"found {n}", tool_call_id=f"c{n}"),
        AIMessage(f"answer {n}", response_metadata={"model_name": "m"}),
    ]


@pytest.fixture
def lc_table(source_db: str) -> Iterator[str]:
    """A langchain-postgres chat table holding five sessions (a to e) of mixed users."""
    with psycopg.connect(source_db) as conn:
        PostgresChatMessageHistory.create_tables(conn, "chat_history")
        for n, name in enumerate("abcde"):
            history = PostgresChatMessageHistory("chat_history", SID[name], sync_connection=conn)
            history.add_messages(conversation(n))
    yield source_db


def everything(backend: Backend, *users: Scope) -> dict[str, Any]:
    """Every session and message of these users, for comparing two imports."""
    state: dict[str, Any] = {}
    for user in users:
        for sid in sorted(
            {s.id for s in backend.list_sessions(user)} | set(backend.list_message_sessions(user))
        ):
            messages = backend.get_messages(user.with_session(sid))
            state[f"{user}#{sid}"] = [
                (m.seq, m.role, m.content, m.metadata, m.tool_calls, m.status, m.created_at)
                for m in messages
            ]
    return state


OWNERS = {
    SID["a"]: "tenant_a:alice",
    SID["b"]: {"tenant": "tenant_a", "user": "bob", "session": "bobs-chat"},
    SID["c"]: Scope("tenant_b", "alice"),
    SID["d"]: "tenant_a:alice",
    # e: not in the mapping, so skipped
}


def test_langchain_postgres_history(lc_table: str, backend: Backend) -> None:
    source = LangChainPostgresHistory(lc_table, "chat_history")
    report = run_import(source, backend, OWNERS)
    assert report.ok and [p.key for p in report.skipped] == [SID["e"]]
    assert report.to_dict()["scopes"] == {
        "tenant_a:alice": {"messages": 10, "sessions": 2},
        "tenant_a:bob": {"messages": 5, "sessions": 1},
        "tenant_b:alice": {"messages": 5, "sessions": 1},
    }
    # read back through LangChain: exactly the source's messages, in order
    for name, scope in (
        ("a", ALICE.with_session(SID["a"])),
        ("b", BOB.with_session("bobs-chat")),
        ("c", ALICE_B.with_session(SID["c"])),
    ):
        n = "abcde".index(name)
        assert MuxiChatMessageHistory(backend, scope).messages == conversation(n)
    # with the source's own times
    with psycopg.connect(lc_table) as conn:
        times = [
            row[0]
            for row in conn.execute(
                "SELECT created_at FROM chat_history WHERE session_id = %s ORDER BY id", [SID["a"]]
            )
        ]
    assert [m.created_at for m in backend.get_messages(ALICE.with_session(SID["a"]))] == times
    # and through LlamaIndex, zero-copy
    li = MuxiChatStore(backend, BOB).get_messages("bobs-chat")
    assert [m.role.value for m in li] == ["system", "user", "assistant", "tool", "assistant"]
    assert isinstance(li[2].blocks[-1], ToolCallBlock)
    # the imported sessions are live: the app continues them
    factory = MuxiHistoryFactory(backend)
    factory(user_id="tenant_a:alice", session_id=SID["d"]).add_messages([HumanMessage("more")])
    assert len(backend.get_messages(ALICE.with_session(SID["d"]))) == 6
    assert SID["e"] not in json.dumps(everything(backend, ALICE, BOB, ALICE_B), default=str)
    assert everything(backend, NOBODY) == {}


def test_rerun_and_dry_run(lc_table: str, backend: Backend) -> None:
    source = LangChainPostgresHistory(lc_table, "chat_history")
    dry = run_import(source, backend, OWNERS, dry_run=True)
    assert dry.totals == {"messages": 20, "sessions": 4} and backend.list_tenants() == []
    run_import(source, backend, OWNERS)
    first = everything(backend, ALICE, BOB, ALICE_B)
    again = run_import(LangChainPostgresHistory(lc_table, "chat_history"), backend, OWNERS)
    assert again.ok and again.totals == {} and again.unchanged == 4
    assert everything(backend, ALICE, BOB, ALICE_B) == first


def test_an_interrupted_import_resumes_to_the_clean_result(
    lc_table: str, make_backend: Any
) -> None:
    clean, resumed = make_backend("sqlite"), make_backend("sqlite")
    run_import(LangChainPostgresHistory(lc_table, "chat_history"), clean, OWNERS)
    calls = 0

    def interrupted(key: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, halfway through
        return OWNERS.get(key)

    with pytest.raises(KeyboardInterrupt):
        run_import(LangChainPostgresHistory(lc_table, "chat_history"), resumed, interrupted)
    halfway = everything(resumed, ALICE, BOB, ALICE_B)
    assert 0 < len(halfway) < 4
    report = run_import(LangChainPostgresHistory(lc_table, "chat_history"), resumed, OWNERS)
    assert report.ok and report.unchanged == len(halfway)
    users = (ALICE, BOB, ALICE_B)  # the source has times: even they must match
    assert everything(resumed, *users) == everything(clean, *users)
    for user in (ALICE, BOB, ALICE_B):
        ids = [s.id for s in clean.list_sessions(user)]
        assert [s.id for s in resumed.list_sessions(user)] == ids


def test_bad_owners_stop_their_record_only(lc_table: str, backend: Backend) -> None:
    def owner(key: str) -> Any:
        if key == SID["a"]:
            return "tenant_a: alice"  # a user id with a leading space: invalid
        if key == SID["b"]:
            return {"tenant": "ten:ant", "user": "bob"}  # ':' in a tenant id: invalid
        if key == SID["c"]:
            raise LookupError("no such customer")
        if key == SID["d"]:
            return 42
        return "tenant_a:bob"

    report = run_import(LangChainPostgresHistory(lc_table, "chat_history"), backend, owner)
    assert not report.ok
    reasons = {p.key: p.reason for p in report.errors}
    assert set(reasons) == {SID["a"], SID["b"], SID["c"], SID["d"]}
    assert "InvalidIdentifier" in reasons[SID["a"]] and "user_id" in reasons[SID["a"]]
    assert "tenant_id" in reasons[SID["b"]]
    assert "LookupError: no such customer" in reasons[SID["c"]]
    assert report.to_dict()["scopes"] == {"tenant_a:bob": {"messages": 5, "sessions": 1}}
    assert backend.list_tenants() == ["tenant_a"]
    assert everything(backend, NOBODY) == {} and everything(backend, ALICE) == {}


def test_a_malformed_row_is_one_error(lc_table: str, backend: Backend) -> None:
    with psycopg.connect(lc_table) as conn:
        conn.execute(
            "INSERT INTO chat_history (session_id, message) VALUES (%s, %s)",
            [SID["b"], json.dumps({"type": "no-such-type", "data": {}})],
        )
    report = run_import(LangChainPostgresHistory(lc_table, "chat_history"), backend, OWNERS)
    assert [p.key for p in report.errors] == [SID["b"]]
    assert "message 6" in report.errors[0].reason
    assert backend.list_sessions(BOB) == []
    assert len(backend.list_sessions(ALICE)) == 2


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("missing_table", "no table"),
        ("wrong_table", "no column"),
        ('chat_history"; DROP TABLE chat_history; --', "no table"),  # a name, never SQL
    ],
)
def test_an_unreadable_table_writes_nothing(
    lc_table: str, backend: Backend, table: str, match: str
) -> None:
    with psycopg.connect(lc_table) as conn:
        conn.execute("CREATE TABLE wrong_table (id int, session_id uuid)")
    with pytest.raises(UnreadableSource, match=match):
        run_import(LangChainPostgresHistory(lc_table, table), backend, OWNERS)
    assert backend.list_tenants() == []
    with psycopg.connect(lc_table) as conn:
        assert conn.execute("SELECT count(*) FROM chat_history").fetchone() == (25,)


def test_an_unreachable_database_is_unreadable(backend: Backend, tmp_path: Path) -> None:
    url = f"postgresql://nobody@/nowhere?host={tmp_path}"
    with pytest.raises(UnreadableSource, match="cannot read"):
        run_import(LangChainPostgresHistory(url, "chat_history"), backend, OWNERS)


# -- LlamaIndex SimpleChatStore files -------------------------------------------------------------

LI_CHAT = {
    "tenant_a:alice:chat1": [
        ChatMessage(role="user", content="hi", additional_kwargs={"trace": "t1"}),
        ChatMessage(
            role="assistant",
            blocks=[
                TextBlock(text="checking"),
                ToolCallBlock(tool_call_id="k1", tool_name="weather", tool_kwargs={"city": "Oslo"}),
            ],
        ),
        ChatMessage(role="tool", content="rain", additional_kwargs={"tool_call_id": "k1"}),
    ],
    "tenant_a:bob:chat1": [ChatMessage(role="user", content="bob's own chat1")],
    "tenant_b:alice:chat9": [ChatMessage(role="user", content="another tenant's alice")],
    "not-a-scoped-key": [ChatMessage(role="user", content="whose is this?")],
}


def persist(store: SimpleChatStore, path: Path, *, legacy: bool = False) -> None:
    """What ``SimpleChatStore.persist`` writes. Its own ``persist`` fails with the pydantic
    installed here (its serializer passes ``info`` where pydantic now wants an index key),
    so the same JSON is written directly, and read back through ``from_persist_path``."""
    data = {
        "store": {k: [m.model_dump(mode="json") for m in v] for k, v in store.store.items()},
        "class_name": "SimpleChatStore",
    }
    text_ = json.dumps(json.dumps(data) if legacy else data)
    path.write_text(text_, encoding="utf-8")
    loaded = SimpleChatStore.from_persist_path(str(path))
    assert loaded.store == store.store


@pytest.mark.parametrize("legacy", [False, True])
def test_llamaindex_simple_chat_store_file(tmp_path: Path, backend: Backend, legacy: bool) -> None:
    store = SimpleChatStore()
    for key, messages in LI_CHAT.items():
        store.set_messages(key, messages)
    path = tmp_path / "chat_store.json"
    persist(store, path, legacy=legacy)
    report = run_import(LlamaIndexSimpleChat(path), backend, "{tenant}:{user}:{session}")
    assert [p.key for p in report.errors] == ["not-a-scoped-key"]
    assert "does not match the template" in report.errors[0].reason
    assert report.to_dict()["scopes"] == {
        "tenant_a:alice": {"messages": 3, "sessions": 1},
        "tenant_a:bob": {"messages": 1, "sessions": 1},
        "tenant_b:alice": {"messages": 1, "sessions": 1},
    }
    alice = MuxiChatStore(backend, ALICE)
    assert alice.get_messages("chat1") == LI_CHAT["tenant_a:alice:chat1"]
    assert alice.get_keys() == ["chat1"]
    assert MuxiChatStore(backend, BOB).get_messages("chat1") == LI_CHAT["tenant_a:bob:chat1"]
    lc = MuxiChatMessageHistory(backend, ALICE.with_session("chat1")).messages
    assert [type(m).__name__ for m in lc] == ["HumanMessage", "AIMessage", "ToolMessage"]
    assert lc[1].tool_calls[0]["args"] == {"city": "Oslo"}
    assert everything(backend, NOBODY) == {}


@pytest.mark.parametrize(
    "content",
    ['{"store": {"k": [', '["a list"]', '{"store": {"k": "not a list"}}', ""],
    ids=["cut", "list", "wrong shape", "empty"],
)
def test_a_bad_simple_chat_file_writes_nothing(
    tmp_path: Path, backend: Backend, content: str
) -> None:
    path = tmp_path / "chat_store.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UnreadableSource):
        run_import(LlamaIndexSimpleChat(path), backend, "{tenant}:{user}:{session}")
    assert backend.list_tenants() == []


def test_a_message_that_is_not_a_chat_message_is_one_error(
    tmp_path: Path, backend: Backend
) -> None:
    path = tmp_path / "chat_store.json"
    path.write_text(
        json.dumps(
            {
                "store": {
                    "tenant_a:alice:ok": [
                        {"role": "user", "blocks": [{"block_type": "text", "text": "x"}]}
                    ],
                    "tenant_a:alice:bad": [{"role": 12345}],
                }
            }
        ),
        encoding="utf-8",
    )
    report = run_import(LlamaIndexSimpleChat(path), backend, "{tenant}:{user}:{session}")
    assert [p.key for p in report.errors] == ["tenant_a:alice:bad"]
    assert backend.list_message_sessions(ALICE) == ["ok"]


def test_two_chats_mapped_to_one_session_are_never_merged(tmp_path: Path, backend: Backend) -> None:
    path = tmp_path / "chat_store.json"
    path.write_text(
        json.dumps(
            {
                "store": {
                    "first": [
                        {"role": "user", "blocks": [{"block_type": "text", "text": "first chat"}]}
                    ],
                    "second": [
                        {"role": "user", "blocks": [{"block_type": "text", "text": "second chat"}]}
                    ],
                }
            }
        ),
        encoding="utf-8",
    )
    owner = {"tenant": "tenant_a", "user": "alice", "session": "merged"}
    report = run_import(LlamaIndexSimpleChat(path), backend, lambda key: owner)
    assert [p.key for p in report.errors] == ["second"]
    assert "session 'merged' of tenant_a:alice is also 'first''s target" in report.errors[0].reason
    assert [m.content for m in backend.get_messages(ALICE.with_session("merged"))] == ["first chat"]


# -- llama-index PostgresChatStore tables ---------------------------------------------------------


@pytest.mark.parametrize("use_jsonb", [False, True])
async def test_llamaindex_postgres_chat_store(
    source_db: str, sql_url: Any, backend: Backend, use_jsonb: bool
) -> None:
    sync = create_engine(sql_url(source_db, "psycopg"), poolclass=NullPool)
    async_engine = create_async_engine(sql_url(source_db, "asyncpg"), poolclass=NullPool)
    store = PostgresChatStore(
        session=sessionmaker(sync),
        async_session=sessionmaker(async_engine, class_=AsyncSession),  # type: ignore[call-overload]
        table_name="ChatStore",
        schema_name="chats",
        use_jsonb=use_jsonb,
    )
    for key, messages in LI_CHAT.items():
        store.set_messages(key, messages)
    sync.dispose()
    await async_engine.dispose()
    owners = {
        "tenant_a:alice:chat1": "tenant_a:alice",
        "tenant_a:bob:chat1": "tenant_a:bob",
        "tenant_b:alice:chat9": "tenant_b:alice",
        "not-a-scoped-key": None,  # None: skip it
    }
    source = LlamaIndexPostgresChat(source_db, "ChatStore", schema="chats")
    report = run_import(source, backend, owners)
    assert report.ok and [p.key for p in report.skipped] == ["not-a-scoped-key"]
    # no session in the owner: the store's key becomes the session id
    db = MuxiDBChatStore(backend, ALICE)
    assert await db.get_keys() == ["tenant_a:alice:chat1"]
    assert await db.get_messages("tenant_a:alice:chat1") == LI_CHAT["tenant_a:alice:chat1"]
    assert (
        await MuxiDBChatStore(backend, ALICE_B).get_messages("tenant_b:alice:chat9")
        == (LI_CHAT["tenant_b:alice:chat9"])
    )
    assert SessionManager(backend).active(ALICE, "tenant_a:alice:chat1")  # live, not expired


def test_a_legacy_postgres_chat_store_table_is_found(source_db: str, backend: Backend) -> None:
    engine = create_engine(source_db.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE data_chatstore (id serial PRIMARY KEY, key varchar, value json[])")
        )
        conn.execute(
            text("INSERT INTO data_chatstore (key, value) VALUES (:k, :v)"),
            {"k": "u1", "v": [ChatMessage(role="user", content="old").model_dump_json()]},
        )
    engine.dispose()
    report = run_import(LlamaIndexPostgresChat(source_db), backend, lambda k: Scope("tenant_x", k))
    assert report.ok
    assert [m.content for m in backend.get_messages(Scope("tenant_x", "u1", "u1"))] == ["old"]
