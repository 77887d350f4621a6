"""PostgreSQL row-level-security setup that mutation testing (bench/mutation.py) found
unchecked: the owner's tenant-wide paths (their settings, sync and async, plain and Citus
``SET LOCAL``), the app role's defaults, statements the server quotes, and a setup step run
again. Real PostgreSQL only: that is where these decisions live.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from muxi_isolation import Memory, Scope, SessionRecord
from muxi_isolation.stores.sql import SQLBackend, _rls, create_app_role

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
CAROL = Scope("tenant_b", "carol")


@pytest.fixture(params=["plain", "citus"])
def pg(request: pytest.FixtureRequest, make_backend: Any) -> SQLBackend:
    backend: SQLBackend = make_backend("postgres", citus=request.param == "citus")
    for who in (ALICE, CAROL):
        backend.insert_session(who, SessionRecord("old", who, T0, T0, T0 + timedelta(hours=1)))
        backend.upsert_memories(who, [Memory("m1", "kept", {})])
    return backend


async def test_the_owner_sees_each_tenant_on_the_admin_paths(pg: SQLBackend) -> None:
    assert pg.list_tenants() == await pg.alist_tenants() == ["tenant_a", "tenant_b"]
    later = T0 + timedelta(days=1)
    assert pg.purge_expired(later, tenant_id="tenant_a").get("sessions") == 1
    assert (await pg.apurge_expired(later)).get("sessions") == 1  # tenant_b's
    assert pg.forget_tenant("tenant_a").get("memories") == 1
    assert (await pg.aforget_tenant("tenant_b")).get("memories") == 1
    assert pg.list_tenants() == []


def test_the_app_role_defaults_take_temporary_away(postgres_urls: Any, postgres_admin: Any) -> None:
    with postgres_admin.begin() as conn:  # PostgreSQL's own default, which the role must lose
        database = conn.scalar(text("SELECT current_database()"))
        conn.execute(text(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC'))
    # a password the server quotes ('%' would be a placeholder to a client-side driver)
    password = f"p%s%%{secrets.token_hex(4)}'"
    assert create_app_role(postgres_urls.admin, password=password) == "muxi_app"
    login = make_url(postgres_urls.admin).set(
        drivername="postgresql+psycopg", username="muxi_app", password=password
    )
    engine = create_engine(login, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            temporary = "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
            assert conn.scalar(text(temporary)) is False
            bypass = "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user"
            assert conn.scalar(text(bypass)) is False
    finally:
        engine.dispose()


def test_the_binding_key_step_run_again_keeps_the_key(
    make_backend: Any, postgres_admin: Any
) -> None:
    backend: SQLBackend = make_backend("postgres")
    backend.upsert_memories(ALICE, [Memory("m1", "kept", {})])
    table = _rls.key_table(backend.tables)
    with postgres_admin.begin() as conn:
        before = conn.execute(table.select().where(table.c.id == 0)).one()
        _rls.binding_key(conn, backend.tables)  # an upgrade step run on a schema that has it
        assert conn.execute(table.select().where(table.c.id == 0)).one() == before
    assert [m.id for m in backend.list_memories(ALICE)] == ["m1"]


def test_every_scoped_table_has_the_three_policies(make_backend: Any, postgres_admin: Any) -> None:
    backend: SQLBackend = make_backend("postgres")
    backend.list_tenants()  # the tables are made on first use
    schema = backend.tables.metadata.schema
    with postgres_admin.connect() as conn:
        rows = conn.execute(
            text("SELECT tablename, policyname FROM pg_policies WHERE schemaname = :s"),
            {"s": schema},
        ).all()
    found: dict[str, set[str]] = {}
    for table, policy in rows:
        found.setdefault(table, set()).add(policy)
    expected = {"muxi_user", "muxi_tenant_admin", "muxi_tenant_list"}
    assert found == {t.name: expected for t in backend.tables.scoped}
