"""The database wall: raw SQL as the app's role, inside a transaction the backend scoped to
Alice, gets nothing of anyone else, whatever it tries.

Each attack runs in a fresh transaction opened the way ``SQLBackend`` opens its own (the
scope set first, transaction-locally), on the app role that the backend connects as (no
superuser, no BYPASSRLS, not the tables' owner). This is the position of SQL injected into
one of Alice's requests, or of a bug in our own SQL: the row-level-security policies are all
that stands between it and the other users' rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from muxi_isolation import ConfigError, Memory, Message, Scope, SessionRecord
from muxi_isolation.records import Receipt
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    StoreItem,
    WriteRecord,
)
from muxi_isolation.stores.sql import SQLBackend, _schema

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
OTHERS = (
    Scope("tenant_a", "bob"),
    Scope("tenant_b", "alice"),  # same user id, another tenant
    Scope("tenant_a", "Alice"),
    Scope("tenant_a", "alice%"),
    Scope("tenant_a", "_lice"),
    Scope("default", "tenant_a:alice"),
)
EVERYONE = (ALICE, *OTHERS)


def fill(backend: SQLBackend) -> None:
    for scope in EVERYONE:
        backend.insert_session(scope, SessionRecord("s1", scope, T0, T0, T0 + timedelta(hours=1)))
        backend.append_messages(scope.with_session("s1"), [Message("user", f"secret of {scope}")])
        backend.upsert_memories(scope, [Memory("m1", f"secret of {scope}", {}, [1.0, 0.0])])
        fill_graph(backend, scope, f"secret of {scope}")


def fill_graph(backend: SQLBackend, scope: Scope, secret: str) -> None:
    """A checkpoint, a pending write and a store item: the agent-graph tables are scoped too."""
    backend.put_checkpoint(scope, CheckpointRecord("s1", "", "c1", None, "bytes", secret.encode()))
    write = WriteRecord("s1", "", "c1", "task", 0, "ch", "bytes", secret.encode())
    backend.put_checkpoint_writes(scope, [write], replace=True)
    backend.put_items(scope, [StoreItem(("facts",), "k", {"secret": secret})], [])
    receipt = Receipt("k1", "request", {"secret": secret})  # an idempotent request's answer
    end = T0 + timedelta(hours=1)
    backend.append_to_session(scope.with_session("s1"), [], now=T0, expires_at=end, receipt=receipt)


def filled(backend: SQLBackend, admin: Any) -> SQLBackend:
    fill(backend)
    assert backend.rls_enforced()
    with admin.begin() as conn:  # statistics exist, so pg_stats has something to hide
        for table in backend.tables.scoped:
            conn.execute(text(f"ANALYZE {qualified(backend, table.name)}"))
    return backend


@pytest.fixture(scope="module")
def pg(shared_backend: Callable[..., Any], postgres_admin: Any) -> SQLBackend:
    """One filled store for the module: every attack below is refused or rolled back, and
    each test checks afterwards that everyone's rows are intact."""
    return filled(shared_backend("postgres"), postgres_admin)


@pytest.fixture
def own_pg(make_backend: Callable[..., Any], postgres_admin: Any) -> SQLBackend:
    """A store of its own, for a test that changes the schema."""
    return filled(make_backend("postgres"), postgres_admin)


def qualified(backend: SQLBackend, name: str) -> str:
    return f'"{backend.tables.metadata.schema}"."{name}"'


def scoped_tables(backend: SQLBackend) -> list[str]:
    return [qualified(backend, t.name) for t in backend.tables.scoped]


@contextmanager
def as_alice(backend: SQLBackend) -> Iterator[Connection]:
    """A transaction on the app role's own pool, scoped to Alice exactly as the backend does."""
    with backend._engine.connect() as conn, conn.begin():
        backend._enter(conn, ALICE, None)
        yield conn


def owners(conn: Connection, table: str, where: str = "") -> set[tuple[str, str]]:
    rows = conn.execute(text(f"SELECT tenant_id, user_id FROM {table} {where}"))
    return {(r.tenant_id, r.user_id) for r in rows}


def foreign(seen: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return seen - {(ALICE.tenant_id, ALICE.user_id)}


def everyone_intact(backend: SQLBackend) -> None:
    """Every user still has exactly the one session, message and memory they started with."""
    for scope in EVERYONE:
        assert [s.id for s in backend.list_sessions(scope)] == ["s1"], scope
        messages = backend.get_messages(scope.with_session("s1"))
        assert [m.content for m in messages] == [f"secret of {scope}"], scope
        assert [m.content for m in backend.list_memories(scope)] == [f"secret of {scope}"], scope
        checkpoints = backend.get_checkpoints(scope, CheckpointQuery())
        assert [(c.checkpoint_id, c.checkpoint) for c in checkpoints] == [
            ("c1", f"secret of {scope}".encode())
        ], scope
        assert [w.value for w in checkpoints[0].writes] == [f"secret of {scope}".encode()], scope
        items = backend.get_items(scope, [(("facts",), "k")], now=datetime.now(timezone.utc))
        assert [i.value for i in items] == [{"secret": f"secret of {scope}"}], scope


# -- reading and writing other scopes with the scope left alone ---------------------------------


def test_the_scoped_transaction_sees_exactly_alice(pg: SQLBackend) -> None:
    assert len(scoped_tables(pg)) >= 7  # sessions, messages, counters, memories, graph tables
    with as_alice(pg) as conn:
        for table in scoped_tables(pg):
            assert owners(conn, table) == {("tenant_a", "alice")}, table


@pytest.mark.parametrize(
    "where",
    [
        "WHERE user_id = 'bob'",
        "WHERE tenant_id = 'tenant_b'",
        "WHERE user_id <> 'alice' OR tenant_id <> 'tenant_a'",
        "WHERE user_id LIKE '%'",
        "WHERE true OR user_id = 'alice'",
        "WHERE user_id IN (SELECT user_id FROM pg_catalog.pg_user)",
    ],
)
def test_raw_reads_of_other_scopes_find_nothing(pg: SQLBackend, where: str) -> None:
    with as_alice(pg) as conn:
        for table in scoped_tables(pg):
            assert foreign(owners(conn, table, where)) == set(), (table, where)


def test_raw_updates_and_deletes_of_other_scopes_touch_nothing(pg: SQLBackend) -> None:
    with as_alice(pg) as conn:
        for table in scoped_tables(pg):
            gone = conn.execute(text(f"DELETE FROM {table} WHERE user_id <> 'alice'"))
            assert gone.rowcount == 0, table
            changed = conn.execute(
                text(f"UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id <> 'tenant_a'")
            )
            assert changed.rowcount == 0, table
    everyone_intact(pg)


@pytest.mark.parametrize(
    "statement",
    [
        # a new row for another user
        "INSERT INTO {memories} (tenant_id, user_id, id, content, metadata, created_at) "
        "VALUES ('tenant_a', 'bob', 'planted', 'x', '{{}}', now())",
        "INSERT INTO {sessions} (tenant_id, user_id, id, created_at, last_active_at, expires_at) "
        "VALUES ('tenant_b', 'alice', 'planted', now(), now(), now())",
        # moving one of Alice's rows into another scope
        "UPDATE {memories} SET user_id = 'bob' WHERE user_id = 'alice'",
        "UPDATE {messages} SET tenant_id = 'tenant_b'",
        # copying Alice's rows into another scope
        "INSERT INTO {memories} SELECT tenant_id, 'bob', 'copy', session_id, content, metadata, "
        "embedding, created_at FROM {memories}",
    ],
)
def test_raw_writes_into_other_scopes_are_refused(pg: SQLBackend, statement: str) -> None:
    names = {t.name.removeprefix(pg.tables.prefix): qualified(pg, t.name) for t in pg.tables.scoped}
    with pytest.raises(DBAPIError, match="row-level security"), as_alice(pg) as conn:
        conn.execute(text(statement.format(**names)))
    everyone_intact(pg)


# -- changing or resetting the scope settings inside the transaction ---------------------------

# Each statement tries to move the transaction's scope somewhere else; afterwards a raw
# SELECT must see nothing of anyone but Alice.
SCOPE_CHANGES: list[tuple[str, ...]] = [
    ("SELECT set_config('muxi.user_id', 'bob', true)",),
    ("SELECT set_config('muxi.user_id', 'bob', false)",),
    ("SELECT set_config('muxi.tenant_id', 'tenant_b', true)",),
    (
        "SELECT set_config('muxi.tenant_id', 'default', true), "
        "set_config('muxi.user_id', 'tenant_a:alice', true)",
    ),
    ("SELECT set_config('muxi.user_id', 'Alice', true)",),
    ("SELECT set_config('muxi.user_id', 'alice%', true)",),
    ("SET LOCAL muxi.user_id = 'bob'",),
    ("SET muxi.user_id = 'bob'",),
    ("SET LOCAL muxi.tenant_id = 'tenant_b'",),
    ("RESET muxi.user_id",),
    ("RESET muxi.tenant_id",),
    ("RESET muxi.scope_tag",),
    ("RESET ALL",),
    ("SELECT set_config('muxi.user_id', '', true)",),
    ("SELECT set_config('muxi.admin', 'on', true)",),
    ("SELECT set_config('muxi.admin', 'on', true), set_config('muxi.user_id', 'bob', true)",),
    ("DO $$ BEGIN PERFORM set_config('muxi.user_id', 'bob', true); END $$",),
    ("SAVEPOINT sp", "SELECT set_config('muxi.user_id', 'bob', true)"),
    # Alice's own tag, kept while the ids change: it signs Alice only
    (
        "SELECT set_config('muxi.user_id', 'bob', true), "
        "set_config('muxi.scope_tag', current_setting('muxi.scope_tag'), true)",
    ),
    (
        "SELECT set_config('muxi.scope_tag', repeat('0', 64), true), "
        "set_config('muxi.user_id', 'bob', true)",
    ),
]


def run_raw(conn: Connection, statement: str) -> None:
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


@pytest.mark.parametrize("change", SCOPE_CHANGES, ids=lambda c: " ; ".join(c))
def test_changing_the_scope_settings_reaches_no_other_scope(
    pg: SQLBackend, change: tuple[str, ...]
) -> None:
    with as_alice(pg) as conn:
        for statement in change:
            run_raw(conn, statement)
        for table in scoped_tables(pg):
            assert foreign(owners(conn, table)) == set(), (table, change)
            gone = conn.execute(text(f"DELETE FROM {table} WHERE user_id <> 'alice'")).rowcount
            assert gone == 0, (table, change)
    everyone_intact(pg)


@pytest.mark.parametrize(
    "query",
    [
        # the setting changes while the statement runs: later rows would be checked against it
        "SELECT tenant_id, user_id FROM {t} WHERE set_config('muxi.user_id', 'bob', true) "
        "IS NOT NULL",
        "WITH s AS MATERIALIZED (SELECT set_config('muxi.user_id', 'bob', true) AS v) "
        "SELECT tenant_id, user_id FROM s, {t}",
        "SELECT tenant_id, user_id FROM {t} WHERE (SELECT set_config('muxi.tenant_id', "
        "'tenant_b', true)) IS NOT NULL",
        "SELECT x.tenant_id, x.user_id FROM (SELECT set_config('muxi.user_id', 'bob', true)) s "
        "CROSS JOIN LATERAL (SELECT * FROM {t}) x",
    ],
)
def test_changing_the_scope_within_one_statement_reaches_no_other_scope(
    pg: SQLBackend, query: str
) -> None:
    for table in scoped_tables(pg):
        with as_alice(pg) as conn:
            rows = conn.execute(text(query.format(t=table)))
            seen = {(r.tenant_id, r.user_id) for r in rows}
            assert foreign(seen) == set(), (table, query)


def test_a_write_after_changing_the_scope_is_refused(pg: SQLBackend) -> None:
    memories = qualified(pg, pg.tables.memories.name)
    with pytest.raises(DBAPIError, match="row-level security"), as_alice(pg) as conn:
        run_raw(conn, "SELECT set_config('muxi.user_id', 'bob', true)")
        conn.execute(
            text(
                f"INSERT INTO {memories} (tenant_id, user_id, id, content, metadata, created_at) "
                "VALUES ('tenant_a', 'bob', 'planted', 'x', '{}', now())"
            )
        )
    everyone_intact(pg)


# -- stepping around the policies ---------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE {t} DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY muxi_user ON {t}",
        "ALTER POLICY muxi_user ON {t} USING (true)",
        "CREATE POLICY everyone ON {t} USING (true)",
        "TRUNCATE {t}",
        "SET ROLE {owner}",
        "SET SESSION AUTHORIZATION {owner}",
        "ALTER ROLE CURRENT_USER BYPASSRLS",
        "GRANT {owner} TO CURRENT_USER",
        "CREATE TABLE {schema}.stolen AS SELECT * FROM {t}",
        "SET row_security = off; SELECT * FROM {t}",
    ],
)
def test_the_app_role_cannot_step_around_the_policies(
    pg: SQLBackend, postgres_admin: Any, statement: str
) -> None:
    with postgres_admin.connect() as admin:
        owner = admin.scalar(
            text("SELECT tableowner FROM pg_tables WHERE schemaname = :s AND tablename = :t"),
            {"s": pg.tables.metadata.schema, "t": pg.tables.memories.name},
        )
    schema = f'"{pg.tables.metadata.schema}"'
    for table in scoped_tables(pg):
        with pytest.raises(DBAPIError), as_alice(pg) as conn:
            for part in statement.split("; "):
                run_raw(conn, part.format(t=table, owner=f'"{owner}"', schema=schema))
    everyone_intact(pg)
    with pg._engine.connect() as conn:  # and nothing of the attempt stuck
        query = "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user"
        assert conn.scalar(text(query)) is False


def test_copy_to_sees_only_alice(pg: SQLBackend) -> None:
    for table in scoped_tables(pg):
        with as_alice(pg) as conn:
            cursor = conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY (SELECT tenant_id, user_id FROM {table}) TO STDOUT") as copy:
                rows = {tuple(row) for row in copy.rows()}
            assert foreign(rows) == set(), table


def test_the_app_role_cannot_create_temporary_objects(pg: SQLBackend) -> None:
    """create_app_role takes TEMPORARY from the role and PUBLIC: nothing to shadow with."""
    with pytest.raises(DBAPIError, match="temporary"), as_alice(pg) as conn:
        conn.execute(text("CREATE TEMP TABLE planted (x int)"))


def test_a_leaky_function_sees_only_alices_rows(pg: SQLBackend, allow_temporary: Any) -> None:
    """The policy runs before a caller's (non-leakproof) function sees a row (with TEMPORARY
    granted back, so the function can be made)."""
    seen: list[str] = []
    with allow_temporary(pg):
        leaky_calls(pg, seen)
    assert seen and set(seen) == {"tenant_a alice"}


def leaky_calls(pg: SQLBackend, seen: list[str]) -> None:
    for table in scoped_tables(pg):
        with as_alice(pg) as conn:
            raw = conn.connection.driver_connection
            handler = lambda diag: seen.append(str(diag.message_primary))  # noqa: E731
            raw.add_notice_handler(handler)
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION pg_temp.peek(t text, u text) RETURNS boolean "
                    "LANGUAGE plpgsql COST 0.0000001 AS "
                    "$$ BEGIN RAISE NOTICE '% %', t, u; RETURN true; END $$"
                )
            )
            conn.execute(text(f"SELECT 1 FROM {table} WHERE pg_temp.peek(tenant_id, user_id)"))
            raw.remove_notice_handler(handler)


def test_statistics_do_not_show_other_scopes(pg: SQLBackend, postgres_admin: Any) -> None:
    """pg_stats would list common values (user ids, contents); RLS tables are hidden there."""
    query = text("SELECT tablename, most_common_vals::text FROM pg_stats WHERE schemaname = :s")
    schema = {"s": pg.tables.metadata.schema}
    with postgres_admin.connect() as admin:  # the statistics exist: the owner sees them
        assert admin.execute(query, schema).all()
    with as_alice(pg) as conn:
        assert conn.execute(query, schema).all() == []


# -- the key that signs the scope ------------------------------------------------------------


def test_the_app_role_cannot_read_the_scope_key(pg: SQLBackend) -> None:
    key_table = qualified(pg, f"{pg.tables.prefix}scope_key")
    with pytest.raises(DBAPIError, match="permission denied"), as_alice(pg) as conn:
        conn.execute(text(f"SELECT key FROM {key_table}"))
    with pytest.raises(DBAPIError, match="permission denied"), as_alice(pg) as conn:
        conn.execute(text(f"UPDATE {key_table} SET key = ''::bytea"))


def test_without_admin_url_a_non_owner_app_role_is_refused(
    pg: SQLBackend, postgres_urls: Any
) -> None:
    """The tables exist, owned by someone else: the app role alone cannot sign a scope."""
    schema = pg.tables.metadata.schema
    alone = SQLBackend(postgres_urls.app, schema=schema, embedding_dimension=None)
    try:
        with pytest.raises(ConfigError, match="admin_url"):
            alone.list_memories(ALICE)
    finally:
        alone.close()


def test_a_version_1_database_is_upgraded_to_the_signed_scope(
    own_pg: SQLBackend, postgres_urls: Any, postgres_admin: Any
) -> None:
    """Schema version 1 trusted plain settings: its upgrade step signs them."""
    pg = own_pg
    schema = pg.tables.metadata.schema
    prefix = pg.tables.prefix
    old_rule = (
        "tenant_id = current_setting('muxi.tenant_id', true) "
        "AND user_id = current_setting('muxi.user_id', true)"
    )
    with postgres_admin.begin() as conn:  # back to the version-1 wall
        for table in scoped_tables(pg):
            rules = f"USING ({old_rule}) WITH CHECK ({old_rule})"
            conn.execute(text(f"ALTER POLICY muxi_user ON {table} {rules}"))
        for part in ("tenant", "user"):
            conn.execute(text(f'DROP FUNCTION "{schema}"."{prefix}scope_{part}"()'))
        conn.execute(text(f"DROP TABLE {qualified(pg, f'{prefix}scope_key')}"))
    forge = (
        "SELECT set_config('muxi.tenant_id', 'tenant_a', true), "
        "set_config('muxi.user_id', 'bob', true)"
    )
    with pg._engine.connect() as conn, conn.begin():  # the old wall: plain settings worked
        run_raw(conn, forge)
        assert owners(conn, scoped_tables(pg)[3]) == {("tenant_a", "bob")}
    owner = create_engine(postgres_urls.owner, poolclass=NullPool)
    try:  # the upgrade runs as the owner, as the backend's own setup would
        with owner.begin() as conn:
            _schema.UPGRADES[1](conn, pg.tables)
    finally:
        owner.dispose()
    upgraded = SQLBackend(
        postgres_urls.app, admin_url=postgres_urls.owner, schema=schema, embedding_dimension=None
    )
    try:
        upgraded.setup()
        with upgraded._engine.connect() as conn, conn.begin():
            run_raw(conn, forge)
            assert owners(conn, scoped_tables(pg)[3]) == set()
        everyone_intact(upgraded)
    finally:
        upgraded.close()


def test_the_wall_holds_in_the_default_schema(postgres_urls: Any, postgres_admin: Any) -> None:
    """No ``schema=``: the tables, key and functions land in the owner's current schema."""
    prefix = f"w{secrets.token_hex(4)}_"
    backend = SQLBackend(
        postgres_urls.app,
        admin_url=postgres_urls.admin,
        table_prefix=prefix,
        embedding_dimension=None,
    )
    try:
        fill(backend)
        everyone_intact(backend)
        with backend._engine.connect() as conn, conn.begin():
            backend._enter(conn, ALICE, None)
            table = f'"{prefix}memories"'
            assert owners(conn, table) == {("tenant_a", "alice")}
            run_raw(conn, "SELECT set_config('muxi.user_id', 'bob', true)")
            assert owners(conn, table) == set()
    finally:
        backend.close()
        with postgres_admin.begin() as conn:
            for scoped in backend.tables.scoped:
                conn.execute(text(f'DROP TABLE IF EXISTS "{scoped.name}" CASCADE'))
            for part in ("tenant", "user"):
                conn.execute(text(f'DROP FUNCTION IF EXISTS "{prefix}scope_{part}"()'))
            for name in ("scope_key", "schema_version"):
                conn.execute(text(f'DROP TABLE IF EXISTS "{prefix}{name}"'))
