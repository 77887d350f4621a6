"""Schema upgrades from the oldest layout: a version 1 database opened by this library ends up
at the current version with its rows kept, and on PostgreSQL with its row-level security
moved to the signed scope (an unsigned scope set by SQL sees nothing any more).

Version 1 is rebuilt from a current database by undoing each later step: no agent-graph
tables (3 -> 4), no expiry index and no owner's tenant list (2 -> 3), and policies that
trusted the plain ``muxi.tenant_id``/``muxi.user_id`` settings, without the scope key (1 -> 2).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from muxi_isolation import Memory, Message, Scope, SessionRecord
from muxi_isolation.stores.graph import ItemQuery, StoreItem
from muxi_isolation.stores.sql import SCHEMA_VERSION, SQLBackend, _rls, _schema

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB_B = Scope("tenant_b", "bob")
V1_RULE = (
    "tenant_id = current_setting('muxi.tenant_id', true) "
    "AND user_id = current_setting('muxi.user_id', true)"
)


def fill(backend: SQLBackend) -> None:
    for user in (ALICE, BOB_B):
        backend.insert_session(user, SessionRecord("s1", user, T0, T0, T0 + timedelta(hours=1)))
        backend.append_messages(user.with_session("s1"), [Message("user", f"{user} says hi")])
        backend.upsert_memories(user, [Memory("m1", f"{user}'s memory")])


def rewind_to_version_1(backend: SQLBackend) -> None:
    t = backend.tables
    core = (t.sessions, t.messages, t.counters, t.memories)
    with backend._admin_engines()[0].begin() as conn:
        assert t.graph is not None
        for table in (*reversed(t.graph.all), t.receipts):
            table.drop(conn)
        conn.execute(t.version.update().values(version=1))
        prep = conn.dialect.identifier_preparer
        index = prep.quote(f"{t.prefix}sessions_by_expiry")
        if backend.dialect == "sqlite":
            conn.execute(text(f"DROP INDEX {index}"))
            return
        conn.execute(text(f"DROP INDEX {prep.quote_schema(t.memories.schema)}.{index}"))
        for table in core:
            name = prep.format_table(table)
            conn.execute(text(f"DROP POLICY muxi_tenant_list ON {name}"))
            conn.execute(
                text(f"ALTER POLICY muxi_user ON {name} USING ({V1_RULE}) WITH CHECK ({V1_RULE})")
            )
        schema = prep.quote_schema(t.memories.schema)
        for part in ("tenant", "user", "enter"):
            conn.execute(text(f"DROP FUNCTION {schema}.{prep.quote(t.prefix + 'scope_' + part)}"))
        _rls.key_table(t).drop(conn)


def unsigned_view(app_url: Any, backend: SQLBackend) -> list[str]:
    """What raw SQL as the app role sees of the memories with an unsigned scope of Alice."""
    engine = create_engine(app_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for name, value in (("muxi.tenant_id", "tenant_a"), ("muxi.user_id", "alice")):
                conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
            table = conn.dialect.identifier_preparer.format_table(backend.tables.memories)
            return [r.content for r in conn.execute(text(f"SELECT content FROM {table}"))]
    finally:
        engine.dispose()


def check_upgraded(backend: SQLBackend) -> None:
    backend.setup()  # what the first call does
    with backend._admin_engines()[0].connect() as conn:
        assert _schema.read_version(conn, backend.tables) == SCHEMA_VERSION
        sessions = backend.tables.sessions
        indexes = {i["name"] for i in inspect(conn).get_indexes(sessions.name, sessions.schema)}
        assert f"{backend.tables.prefix}sessions_by_expiry" in indexes
    assert [m.content for m in backend.get_messages(ALICE.with_session("s1"))] == [
        "tenant_a:alice says hi"
    ]
    assert [m.content for m in backend.list_memories(BOB_B)] == ["tenant_b:bob's memory"]
    assert backend.list_tenants() == ["tenant_a", "tenant_b"]  # the owner's tenant list
    backend.put_items(ALICE, [StoreItem(("notes",), "k", {"v": 1}, T0, T0)], [])
    assert [i.key for i in backend.search_items(ALICE, ItemQuery(), now=T0)] == ["k"]
    assert backend.search_items(BOB_B, ItemQuery(), now=T0) == []
    later = T0 + timedelta(days=1)
    assert backend.purge_expired(later) == {"sessions": 2, "messages": 2}


def test_a_version_1_sqlite_database_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    old = SQLBackend(url, embedding_dimension=None)
    fill(old)
    rewind_to_version_1(old)
    old.close()
    new = SQLBackend(url, embedding_dimension=None)
    try:
        check_upgraded(new)
    finally:
        new.close()


@pytest.mark.parametrize("dimension", [None, 4])
def test_a_version_1_postgres_database_is_upgraded_to_the_signed_scope(
    make_backend: Any, postgres_urls: Any, dimension: int | None
) -> None:
    old = make_backend("postgres", embedding_dimension=dimension)
    fill(old)
    rewind_to_version_1(old)
    assert unsigned_view(postgres_urls.app, old) == ["tenant_a:alice's memory"]  # the old hole
    schema = old.tables.memories.schema
    new = SQLBackend(
        postgres_urls.app,
        admin_url=postgres_urls.admin,
        schema=schema,
        embedding_dimension=dimension,
    )
    try:
        check_upgraded(new)
        assert new.rls_enforced()
        assert unsigned_view(postgres_urls.app, new) == []
        with new._admin_engines()[0].connect() as conn:
            query = "SELECT tablename || '.' || policyname FROM pg_policies WHERE schemaname = :s"
            policies = set(conn.execute(text(query), {"s": schema}).scalars())
        for table in new.tables.scoped:
            for policy in ("muxi_user", "muxi_tenant_admin", "muxi_tenant_list"):
                assert f"{table.name}.{policy}" in policies
    finally:
        new.close()
