"""Import sources opened by kind name, as ``muxi-isolation import KIND`` opens them: each kind
takes only its own options, refuses a location it cannot read before any write, and reads
the table or schema its options name."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_postgres import PostgresChatMessageHistory

from muxi_isolation import ConfigError, Scope, UnreadableSource
from muxi_isolation.migrate import run_import
from muxi_isolation.migrate.sources import SOURCE_KINDS, open_source

DATABASE_KINDS: dict[str, dict[str, Any]] = {
    "langchain-postgres-history": {"table": "t"},
    "langchain-pgvector": {"collections": ["c"]},
    "llamaindex-postgres-chat": {},
    "llamaindex-pgvector": {"table": "t"},
}
SID = "00000000-0000-0000-0000-000000000001"


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown source kind 'csv': one of ") as caught:
        open_source("csv", "data.csv")
    assert all(kind in str(caught.value) for kind in SOURCE_KINDS)


@pytest.mark.parametrize("kind", ["langchain-postgres-history", "llamaindex-pgvector"])
def test_a_kind_reading_one_table_needs_its_name(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"{kind} needs --table"):
        open_source(kind, "postgresql://db.example/app")


@pytest.mark.parametrize(
    ("kind", "options", "refused"),
    [
        ("llamaindex-simple-chat", {"key_field": "user"}, "--key-field"),
        ("langchain-inmemory", {"table": "t", "collections": ["c"]}, "--collection, --table"),
        ("muxi-export", {"key_field": "user", "table": "t"}, "--key-field, --table"),
        ("langchain-postgres-history", {"collections": ["c"], "table": "t"}, "--collection"),
        ("llamaindex-postgres-chat", {"key_field": "user"}, "--key-field"),
    ],
)
def test_options_a_kind_does_not_take_are_refused(
    kind: str, options: dict[str, Any], refused: str
) -> None:
    with pytest.raises(ConfigError, match=f"{kind} does not take {refused}$"):
        open_source(kind, "somewhere", **options)


@pytest.mark.parametrize("kind", DATABASE_KINDS)
@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("sqlite:///chat.db", "lives in PostgreSQL"),
        ("chat.db", "not a database URL"),
        ("mysql://db.example/app", "not a database URL"),
    ],
)
def test_a_database_kind_needs_a_postgresql_url(kind: str, location: str, match: str) -> None:
    with pytest.raises(UnreadableSource, match=match):
        open_source(kind, location, **DATABASE_KINDS[kind])


def test_each_database_kind_reads_the_table_and_schema_it_is_given(
    source_db: str, make_backend: Any
) -> None:
    target = make_backend("memory")
    cases = [
        ("langchain-postgres-history", {"table": "chat_log"}, r"'chat_log' in the default"),
        ("langchain-postgres-history", {"table": "chat_log", "schema": "hist"}, "schema 'hist'"),
        ("langchain-pgvector", {"schema": "vec"}, "'langchain_pg_collection' in schema 'vec'"),
        ("llamaindex-postgres-chat", {}, "'chatstore' or 'data_chatstore' in schema 'public'"),
        ("llamaindex-postgres-chat", {"table": "talk", "schema": "li"}, "'talk' .* schema 'li'"),
        ("llamaindex-pgvector", {"table": "docs"}, "'data_docs' or 'docs' in schema 'public'"),
    ]
    for kind, options, match in cases:
        source = open_source(kind, source_db, **options)
        with pytest.raises(UnreadableSource, match=match):
            run_import(source, target, "tenant_a:alice")
    assert target.list_tenants() == []

    with psycopg.connect(source_db) as conn:
        PostgresChatMessageHistory.create_tables(conn, "chat_log")
        history = PostgresChatMessageHistory("chat_log", SID, sync_connection=conn)
        history.add_messages([HumanMessage("hello"), AIMessage("hi alice")])
    source = open_source("langchain-postgres-history", source_db, table="chat_log")
    owner = {"tenant": "tenant_a", "user": "alice", "session": "first-chat"}
    report = run_import(source, target, {SID: owner})
    assert report.ok and report.totals == {"messages": 2, "sessions": 1}
    chat = target.get_messages(Scope("tenant_a", "alice", "first-chat"))
    assert [m.role for m in chat] == ["user", "assistant"]
    assert target.list_tenants() == ["tenant_a"]
