"""Row-level security on PostgreSQL: the database itself refuses other scopes' rows.

These tests go around the backend: they connect as the app's role with raw SQL
(``SELECT *`` with no WHERE at all) and show what the policies alone let through.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from muxi_isolation import ConfigError, Memory, Message, Scope, SessionRecord
from muxi_isolation.records import Receipt
from muxi_isolation.stores.graph import CheckpointRecord, StoreItem, WriteRecord
from muxi_isolation.stores.sql import SQLBackend, create_app_role

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")
EVERYONE = (ALICE, BOB, ALICE_B)


def fill(backend: SQLBackend) -> None:
    for scope in EVERYONE:
        backend.insert_session(scope, SessionRecord("s1", scope, T0, T0, T0 + timedelta(hours=1)))
        backend.append_messages(scope.with_session("s1"), [Message("user", f"hi from {scope}")])
        backend.upsert_memories(scope, [Memory("m1", f"{scope}'s memory", {}, [1.0, 0.0])])
        fill_graph(backend, scope, f"hi from {scope}")


def fill_graph(backend: SQLBackend, scope: Scope, secret: str) -> None:
    """A checkpoint, a pending write and a store item: the agent-graph tables are scoped too."""
    backend.put_checkpoint(scope, CheckpointRecord("s1", "", "c1", None, "bytes", secret.encode()))
    write = WriteRecord("s1", "", "c1", "task", 0, "ch", "bytes", secret.encode())
    backend.put_checkpoint_writes(scope, [write], replace=True)
    backend.put_items(scope, [StoreItem(("facts",), "k", {"secret": secret})], [])
    receipt = Receipt("k1", "request", {"secret": secret})  # an idempotent request's answer
    end = T0 + timedelta(hours=1)
    backend.append_to_session(scope.with_session("s1"), [], now=T0, expires_at=end, receipt=receipt)


@pytest.fixture
def pg(make_backend, postgres_urls):
    backend = make_backend("postgres")
    fill(backend)
    app = create_engine(postgres_urls.app, poolclass=NullPool)
    yield backend, app
    app.dispose()


def tables(backend: SQLBackend) -> list[str]:
    return [f'"{t.schema}"."{t.name}"' for t in backend.tables.scoped]


def raw_rows(conn, table: str) -> list[tuple[str, str]]:
    return [(r.tenant_id, r.user_id) for r in conn.execute(text(f"SELECT * FROM {table}"))]


def set_scope(conn, backend: SQLBackend | None = None, **settings: str) -> None:
    """Make raw settings; with the ``backend``, open the scope as it does (signed)."""
    if backend is not None:
        backend._enter(conn, Scope(settings["tenant_id"], settings["user_id"]), None)
        return
    for name, value in settings.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": f"muxi.{name}", "v": value})


def test_the_app_role_is_what_the_tests_use(pg) -> None:
    backend, app = pg
    assert backend.rls_enforced()
    with app.connect() as conn:
        row = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        owner = conn.scalar(
            text("SELECT tableowner FROM pg_tables WHERE tablename = :t"),
            {"t": backend.tables.memories.name},
        )
        assert tuple(row) == (False, False)
        assert owner != conn.scalar(text("SELECT current_user"))


def test_raw_select_sees_only_the_current_scope(pg) -> None:
    backend, app = pg
    for table in tables(backend):
        for scope in EVERYONE:
            with app.begin() as conn:
                ids = {"tenant_id": scope.tenant_id, "user_id": scope.user_id}
                set_scope(conn, backend, **ids)
                rows = raw_rows(conn, table)
            assert rows and set(rows) == {(scope.tenant_id, scope.user_id)}, table


def test_raw_select_without_a_scope_sees_nothing(pg) -> None:
    backend, app = pg
    with app.connect() as conn:
        for table in tables(backend):
            with conn.begin():
                assert raw_rows(conn, table) == []  # never set: NULL
            with conn.begin():
                set_scope(conn, tenant_id="tenant_a")  # half a scope
                assert raw_rows(conn, table) == []
            with conn.begin():
                set_scope(conn, tenant_id="tenant_a", user_id="alice")  # unsigned
                assert raw_rows(conn, table) == []
            with conn.begin():
                set_scope(conn, backend, tenant_id="tenant_a", user_id="alice")
                assert raw_rows(conn, table)
            with conn.begin():  # same connection after a local setting ended: ''
                assert conn.scalar(text("SELECT current_setting('muxi.user_id', true)")) == ""
                assert raw_rows(conn, table) == []


def test_the_app_role_cannot_turn_on_the_admin_path(pg) -> None:
    backend, app = pg
    with app.begin() as conn:
        set_scope(conn, tenant_id="tenant_a", admin="on")
        for table in tables(backend):
            assert raw_rows(conn, table) == []


def test_writes_outside_the_scope_are_refused(pg) -> None:
    backend, app = pg
    table = tables(backend)[0]  # sessions
    with pytest.raises(DBAPIError, match="row-level security"), app.begin() as conn:
        set_scope(conn, tenant_id="tenant_a", user_id="alice")
        conn.execute(
            text(
                f"INSERT INTO {table} (tenant_id, user_id, id, created_at, last_active_at, "
                "expires_at) VALUES ('tenant_a', 'bob', 'x', now(), now(), now())"
            )
        )
    with app.begin() as conn:
        set_scope(conn, tenant_id="tenant_a", user_id="alice")
        gone = conn.execute(text(f"DELETE FROM {table} WHERE user_id = 'bob'")).rowcount
        assert gone == 0
    with pytest.raises(DBAPIError), app.begin() as conn:
        conn.execute(text(f"TRUNCATE {table}"))  # no TRUNCATE (which skips RLS) for the app
    assert [s.id for s in backend.list_sessions(BOB)] == ["s1"]


def test_transaction_local_settings_do_not_outlive_a_call(pg) -> None:
    backend, _ = pg
    backend.list_memories(ALICE)
    with backend._engine.connect() as conn, conn.begin():  # the pooled connection it used
        assert conn.scalar(text("SELECT current_setting('muxi.tenant_id', true)")) in ("", None)
        assert raw_rows(conn, tables(backend)[3]) == []


def test_forget_tenant_is_the_owners_admin_path(pg) -> None:
    backend, _ = pg
    graph = {"checkpoints": 2, "checkpoint_writes": 2, "store_items": 2, "receipts": 2}
    expected = {"sessions": 2, "messages": 2, "memories": 2, **graph}
    assert backend.forget_tenant("tenant_a") == expected
    assert backend.list_memories(ALICE) == [] and backend.list_memories(BOB) == []
    assert [m.content for m in backend.list_memories(ALICE_B)] == ["tenant_b:alice's memory"]


async def test_aforget_tenant(pg) -> None:
    backend, _ = pg
    counts = await backend.aforget_tenant("tenant_b")
    graph = {"checkpoints": 1, "checkpoint_writes": 1, "store_items": 1, "receipts": 1}
    assert counts == {"sessions": 1, "messages": 1, "memories": 1, **graph}
    assert await backend.acount_memories(ALICE) == 1


def test_forget_tenant_needs_admin_url_on_postgres(postgres_urls) -> None:
    backend = SQLBackend(postgres_urls.app, schema="public", embedding_dimension=None)
    try:
        with pytest.raises(ConfigError):
            backend.forget_tenant("tenant_a")
    finally:
        backend.close()


def test_a_superuser_url_is_reported_as_bypassing_rls(postgres_urls, postgres_admin) -> None:
    backend = SQLBackend(postgres_urls.admin, schema="rls_probe", embedding_dimension=None)
    try:
        assert backend.rls_enforced() is False
        backend.upsert_memories(ALICE, [Memory("m", "x")])  # still works, filters still apply
        assert backend.list_memories(BOB) == []
    finally:
        backend.close()
        with postgres_admin.begin() as conn:
            conn.execute(text("DROP SCHEMA rls_probe CASCADE"))


# -- create_app_role ------------------------------------------------------------------------


def test_create_app_role_is_for_postgresql(tmp_path) -> None:
    with pytest.raises(ConfigError, match="for PostgreSQL"):
        create_app_role(f"sqlite:///{tmp_path}/x.db", "muxi_app")


@pytest.fixture
def probe_role(postgres_admin) -> Iterator[str]:
    role = f"muxi_probe_{secrets.token_hex(4)}"
    yield role
    with postgres_admin.begin() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def role_flags(postgres_admin, role: str) -> tuple[object, ...]:
    with postgres_admin.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT rolcanlogin, rolsuper, rolbypassrls, rolinherit, rolpassword IS NULL "
                    "FROM pg_authid WHERE rolname = :r"
                ),
                {"r": role},
            ).one()
        )


def test_create_app_role_refuses_roles_that_skip_rls(
    postgres_urls, postgres_admin, probe_role: str
) -> None:
    superuser = make_url(postgres_urls.admin).username
    with pytest.raises(ConfigError, match="bypasses row-level security"):
        create_app_role(postgres_urls.admin, superuser)
    with postgres_admin.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{probe_role}" LOGIN BYPASSRLS'))
    with pytest.raises(ConfigError, match=f"'{probe_role}' bypasses row-level security"):
        create_app_role(postgres_urls.admin, probe_role)
    assert role_flags(postgres_admin, probe_role)[2] is True  # left as it was


def test_create_app_role_without_a_password(postgres_urls, postgres_admin, probe_role: str) -> None:
    assert create_app_role(postgres_urls.admin, probe_role) == probe_role
    assert role_flags(postgres_admin, probe_role) == (True, False, False, False, True)
    with postgres_admin.begin() as conn:
        conn.execute(text(f'ALTER ROLE "{probe_role}" NOLOGIN INHERIT'))
    assert create_app_role(postgres_urls.admin, probe_role, password="pw") == probe_role
    assert role_flags(postgres_admin, probe_role) == (True, False, False, False, False)
