"""Pooled connections: nothing one transaction sets or creates reaches the next user.

The position is that of ``test_database_wall.py`` (SQL running as the app role inside a
transaction scoped to Alice), with the README's deployment: no ``schema=``, so the tables live
in the owner's default schema, and a pool of one connection, so the next call certainly reuses
the connection the attacker used. Each attack is run on the sync and the async engine.
"""

from __future__ import annotations

import logging
import re
import secrets
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from _watch import executed, postgres_round_trips, sent_sql
from sqlalchemy import text

from muxi_isolation import Memory, Message, Scope
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.sql import SQLBackend, _rls

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")


@pytest.fixture
def pooled(postgres_urls: Any, postgres_admin: Any) -> Iterator[SQLBackend]:
    """A backend without ``schema=`` on a pool of exactly one connection."""
    prefix = f"p{secrets.token_hex(4)}_"
    backend = SQLBackend(
        postgres_urls.app,
        admin_url=postgres_urls.admin,
        table_prefix=prefix,
        embedding_dimension=None,
        pool_size=1,
        max_overflow=0,
    )
    backend.setup()
    yield backend
    backend.close()
    with postgres_admin.begin() as conn:
        for table in reversed(backend.tables.metadata.sorted_tables):
            conn.execute(text(f'DROP TABLE IF EXISTS "public"."{table.name}" CASCADE'))
        conn.execute(text(f'DROP TABLE IF EXISTS "public"."{prefix}scope_key"'))
        for part in ("tenant", "user", "enter"):
            conn.execute(text(f'DROP FUNCTION IF EXISTS "public"."{prefix}scope_{part}" CASCADE'))


PLANT = (
    "CREATE TEMP TABLE {name} (LIKE {real} INCLUDING ALL)",
    "INSERT INTO {name} (tenant_id, user_id, id, content, metadata, created_at) "
    "VALUES ('tenant_a', 'bob', 'planted', 'planted by alice', '{{}}', now())",
    "SELECT set_config('muxi.stash', current_setting('muxi.scope_tag'), false)",
    "SELECT set_config('muxi.stash_user', current_setting('muxi.user_id'), false)",
)


def plant(conn: Any, backend: SQLBackend) -> None:
    real = f'"public"."{backend.tables.memories.name}"'
    for statement in PLANT:
        conn.execute(text(statement.format(name=backend.tables.memories.name, real=real)))


def owner_rows(admin: Any, backend: SQLBackend) -> set[tuple[str, str, str]]:
    with admin.connect() as conn:
        rows = conn.execute(
            text(f'SELECT tenant_id, user_id, id FROM "public"."{backend.tables.memories.name}"')
        )
        return {tuple(r) for r in rows}


def test_the_tables_are_placed_in_the_owners_schema(pooled: SQLBackend) -> None:
    assert pooled.tables.metadata.schema == "public"


def test_a_temp_table_planted_on_a_pooled_connection_shadows_nothing(
    pooled: SQLBackend, postgres_admin: Any, allow_temporary: Any
) -> None:
    with allow_temporary(pooled):
        with pooled._engine.connect() as conn, conn.begin():
            pooled._enter(conn, ALICE, None)
            plant(conn, pooled)
        assert pooled.list_memories(BOB) == []
        pooled.upsert_memories(BOB, [Memory("m1", "bob's own", {}, None)])
        assert [m.id for m in pooled.list_memories(BOB)] == ["m1"]
    assert owner_rows(postgres_admin, pooled) == {("tenant_a", "bob", "m1")}


async def test_a_temp_table_planted_on_a_pooled_async_connection_shadows_nothing(
    pooled: SQLBackend, postgres_admin: Any, allow_temporary: Any
) -> None:
    with allow_temporary(pooled):
        async with pooled._aengine.connect() as conn, conn.begin():
            await conn.run_sync(pooled._enter, ALICE, None)
            await conn.run_sync(plant, pooled)
        assert await pooled.alist_memories(BOB) == []
        await pooled.aupsert_memories(BOB, [Memory("m1", "bob's own", {}, None)])
        assert [m.id for m in await pooled.alist_memories(BOB)] == ["m1"]
    assert owner_rows(postgres_admin, pooled) == {("tenant_a", "bob", "m1")}


LEFTOVERS = text(
    "SELECT current_setting('muxi.stash', true), to_regclass('pg_temp.' || :name)::text"
)


def test_a_connection_comes_back_from_the_pool_with_nothing_left(
    pooled: SQLBackend, postgres_admin: Any, allow_temporary: Any
) -> None:
    with allow_temporary(pooled):
        with pooled._engine.connect() as conn, conn.begin():
            pooled._enter(conn, ALICE, None)
            plant(conn, pooled)
        with pooled._engine.connect() as conn:  # the same connection: the pool holds one
            stash, temp = conn.execute(LEFTOVERS, {"name": pooled.tables.memories.name}).one()
    assert stash in (None, "") and temp is None


async def test_an_async_connection_comes_back_from_the_pool_with_nothing_left(
    pooled: SQLBackend, postgres_admin: Any, allow_temporary: Any
) -> None:
    with allow_temporary(pooled):
        async with pooled._aengine.connect() as conn, conn.begin():
            await conn.run_sync(pooled._enter, ALICE, None)
            await conn.run_sync(plant, pooled)
        async with pooled._aengine.connect() as conn:
            found = await conn.execute(LEFTOVERS, {"name": pooled.tables.memories.name})
            stash, temp = found.one()
    assert stash in (None, "") and temp is None


def test_sql_no_event_sees_is_still_reset_on_checkin(pooled: SQLBackend) -> None:
    """A connection taken raw (``raw_connection()``: its statements fire no SQLAlchemy
    event) is reset all the same; the backend's own next call runs on a clean session."""
    raw = pooled._engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT set_config('muxi.stash', 'left by a raw caller', false)")
        raw.commit()
    finally:
        raw.close()  # back to the pool of one
    pooled.upsert_memories(ALICE, [Memory("m1", "kept", {})])  # the backend's own call
    with pooled._engine.connect() as conn:
        stash, temp = conn.execute(LEFTOVERS, {"name": pooled.tables.memories.name}).one()
    assert stash in (None, "") and temp is None


REPLAY = (
    "SELECT set_config('muxi.tenant_id', 'tenant_a', true), "
    "set_config('muxi.user_id', current_setting('muxi.stash_user'), true), "
    "set_config('muxi.scope_tag', current_setting('muxi.stash'), true)"
)


def test_a_scope_tag_stashed_in_one_transaction_opens_nothing_in_the_next(
    pooled: SQLBackend,
) -> None:
    """Even on a connection never returned to the pool (no reset between): the tag that
    ``scope_enter`` sets is bound to its transaction."""
    pooled.upsert_memories(ALICE, [Memory("a1", "alice's secret", {}, None)])
    real = f'"public"."{pooled.tables.memories.name}"'
    with pooled._engine.connect() as conn:
        with conn.begin():
            pooled._enter(conn, ALICE, None)
            conn.execute(text(PLANT[2]))
            conn.execute(text(PLANT[3]))
            assert conn.scalar(text(f"SELECT count(*) FROM {real}")) == 1  # Alice sees hers
        with conn.begin():
            conn.execute(text(REPLAY))
            assert conn.scalar(text("SELECT current_setting('muxi.user_id')")) == "alice"
            assert conn.scalar(text(f"SELECT count(*) FROM {real}")) == 0


async def test_an_async_scope_tag_stashed_in_one_transaction_opens_nothing_in_the_next(
    pooled: SQLBackend,
) -> None:
    await pooled.aupsert_memories(ALICE, [Memory("a1", "alice's secret", {}, None)])
    real = f'"public"."{pooled.tables.memories.name}"'
    async with pooled._aengine.connect() as conn:
        async with conn.begin():
            await conn.run_sync(pooled._enter, ALICE, None)
            await conn.execute(text(PLANT[2]))
            await conn.execute(text(PLANT[3]))
            assert await conn.scalar(text(f"SELECT count(*) FROM {real}")) == 1
        async with conn.begin():
            await conn.execute(text(REPLAY))
            assert await conn.scalar(text(f"SELECT count(*) FROM {real}")) == 0


def test_the_tag_the_backend_signs_is_never_left_in_a_setting(pooled: SQLBackend) -> None:
    """What the backend proves the scope with is an argument of ``scope_enter``, not a
    setting SQL in the transaction could read and keep."""
    with pooled._engine.connect() as conn, conn.begin():
        pooled._enter(conn, ALICE, None)
        assert pooled._scope_key is not None
        signed = _rls.scope_tag(pooled._scope_key, ALICE)
        settings = conn.execute(text("SELECT setting FROM pg_settings")).scalars().all()
        tag = conn.scalar(text("SELECT current_setting('muxi.scope_tag')"))
    assert signed not in settings and tag != signed


def test_a_forged_tag_is_refused_by_scope_enter(pooled: SQLBackend) -> None:
    statement = pooled._enter_statement
    assert statement is not None
    with (
        pytest.raises(Exception, match="does not verify"),
        pooled._engine.connect() as conn,
        conn.begin(),
    ):
        _rls.enter_scope(conn, statement, ALICE, b"not the key", citus=False)


QUALIFIED = re.compile(r'"public"\."(?P<name>[a-z0-9_]+)"')


def test_every_statement_names_the_schema_of_its_tables(pooled: SQLBackend) -> None:
    """No table name reaches PostgreSQL unqualified, where pg_temp would be searched first."""
    names = [t.name for t in pooled.tables.scoped]
    with executed(pooled) as sent, postgres_round_trips(pooled) as traces:
        pooled.upsert_memories(ALICE.with_session("s1"), [Memory("m", "x", {}, [1.0, 0.0])])
        pooled.list_memories(ALICE)
        pooled.search_memories(ALICE, [1.0, 0.0], k=1)
        pooled.delete_memories(ALICE, ids=["m"])
        sessions = SessionManager(pooled)
        record = sessions.create(ALICE)  # the append's touch + seqs statement, and the insert
        sessions.append(ALICE.with_session(record.id), [Message("user", "hi")])
        pooled.get_messages(ALICE.with_session(record.id))
        pooled.read_turn(ALICE, record.id, now=record.created_at, last=50)  # its join
        pooled.list_sessions(ALICE)
    on_the_wire = sent_sql(traces)  # the pipelined flights' statements too (search, append)
    assert any(pooled.tables.counters.name in s for s in on_the_wire)
    assert any(pooled.tables.memories.name in s for s in sent)
    assert len(on_the_wire) > len(sent)
    for statement in [*sent, *on_the_wire]:
        bare = QUALIFIED.sub("", statement)
        for name in names:
            assert not re.search(rf'(?<![."\w]){name}\b|"{name}"', bare), statement


def test_create_app_role_takes_temporary_away(pooled: SQLBackend) -> None:
    with pooled._engine.connect() as conn:
        may = conn.scalar(text("SELECT has_database_privilege(current_database(), 'TEMPORARY')"))
    assert may is False


def test_startup_warns_when_the_app_role_can_create_temporary_tables(
    postgres_urls: Any, postgres_admin: Any, caplog: pytest.LogCaptureFixture, allow_temporary: Any
) -> None:
    schema = f"w_{secrets.token_hex(4)}"
    backend = SQLBackend(
        postgres_urls.app, admin_url=postgres_urls.admin, schema=schema, embedding_dimension=None
    )
    try:
        with (
            allow_temporary(backend),
            caplog.at_level(logging.WARNING, logger="muxi_isolation.stores.sql"),
        ):
            backend.setup()
    finally:
        backend.close()
        with postgres_admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    warned = [r.getMessage() for r in caplog.records if "temporary" in r.getMessage()]
    assert warned and "REVOKE TEMPORARY ON DATABASE" in warned[0]


def test_startup_warns_when_the_app_role_owns_something(
    postgres_urls: Any, postgres_admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    schema = f"w_{secrets.token_hex(4)}"
    role = postgres_urls.app.username
    with postgres_admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}_own" AUTHORIZATION "{role}"'))
    backend = SQLBackend(
        postgres_urls.app, admin_url=postgres_urls.admin, schema=schema, embedding_dimension=None
    )
    try:
        with caplog.at_level(logging.WARNING, logger="muxi_isolation.stores.sql"):
            backend.setup()
    finally:
        backend.close()
        with postgres_admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}_own" CASCADE'))
    warned = [r.getMessage() for r in caplog.records if "owns" in r.getMessage()]
    assert warned and "REASSIGN OWNED" in warned[0]


def test_a_temp_table_on_a_pooled_sqlite_connection_shadows_nothing(tmp_path: Any) -> None:
    """SQLite also looks unqualified names up in ``temp`` first; every statement says ``main``."""
    backend = SQLBackend(
        f"sqlite:///{tmp_path / 's.db'}", embedding_dimension=None, pool_size=1, max_overflow=0
    )
    try:
        backend.setup()
        name = backend.tables.memories.name
        assert backend.tables.metadata.schema == "main"
        with backend._engine.connect() as conn, conn.begin():
            conn.execute(text(f"CREATE TEMP TABLE {name} AS SELECT * FROM main.{name}"))
            conn.execute(
                text(
                    f"INSERT INTO temp.{name} (tenant_id, user_id, id, content, metadata, "
                    "created_at) VALUES ('tenant_a', 'bob', 'planted', 'x', '{}', "
                    "'2026-01-01 00:00:00')"
                )
            )
        assert backend.list_memories(BOB) == []
        backend.upsert_memories(BOB, [Memory("m1", "bob's own", {}, [1.0, 0.0])])
        with backend._engine.connect() as conn, conn.begin():  # a planted row with a vector
            conn.execute(
                text(f"UPDATE temp.{name} SET embedding = :e, content = 'planted'"),
                {"e": struct.pack("<2f", 1.0, 0.0)},
            )
        # the search runs on the DB-API connection (the driver path), the same one
        found = [m.id for m, _ in backend.search_memories(BOB, [1.0, 0.0], 5)]
        assert found == ["m1"]
        with backend._engine.connect() as conn:  # the same connection, temp table and all
            real = conn.execute(text(f"SELECT id FROM main.{name}")).scalars().all()
            planted = conn.execute(text(f"SELECT id FROM temp.{name}")).scalars().all()
        assert (real, planted) == (["m1"], ["planted"])
    finally:
        backend.close()
