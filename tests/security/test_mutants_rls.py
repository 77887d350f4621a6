"""PostgreSQL row-level-security setup that mutation testing (bench/mutation.py) found
unchecked: the owner's tenant-wide paths (their settings, sync and async, plain and Citus
``SET LOCAL``), the app role's defaults, statements the server quotes, and a setup step run
again. Real PostgreSQL only: that is where these decisions live.

The owner is an ordinary role, as in production (tests/conftest.py): the test server's
superuser would pass every row-level policy and hide a wrong admin setting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
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
# '%s' and '%%' are placeholders to a client-side driver: the server must quote them
CAROL = Scope("tenant_%s", "carol%%")


@pytest.fixture(params=["plain", "citus"])
def pg(
    request: pytest.FixtureRequest, postgres_urls: Any, postgres_admin: Any
) -> Iterator[SQLBackend]:
    schema = f"t_{secrets.token_hex(6)}"
    citus = request.param == "citus"
    backend = SQLBackend(
        postgres_urls.app, admin_url=postgres_urls.owner, schema=schema, citus=citus
    )
    try:
        for who in (ALICE, CAROL):
            window = SessionRecord("old", who, T0, T0, T0 + timedelta(hours=1))
            backend.insert_session(who, window)
            backend.upsert_memories(who, [Memory("m1", "kept", {})])
        yield backend
    finally:
        backend.close()
        with postgres_admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def test_the_owner_sees_each_tenant_on_the_admin_paths(pg: SQLBackend) -> None:
    assert [m.content for m in pg.list_memories(CAROL)] == ["kept"]  # the quoted scope holds
    assert pg.list_tenants() == await pg.alist_tenants() == ["tenant_%s", "tenant_a"]
    later = T0 + timedelta(days=1)
    assert pg.purge_expired(later, tenant_id="tenant_a").get("sessions") == 1
    assert (await pg.apurge_expired(later)).get("sessions") == 1  # the other tenant's
    assert pg.forget_tenant("tenant_a").get("memories") == 1
    assert (await pg.aforget_tenant(CAROL.tenant_id)).get("memories") == 1
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
    assert _scram_matches(postgres_admin, "muxi_app", password)  # the server quoted it whole
    engine = create_engine(login, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            temporary = "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
            assert conn.scalar(text(temporary)) is False
            bypass = "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user"
            assert conn.scalar(text(bypass)) is False
    finally:
        engine.dispose()


def _scram_matches(admin: Any, role: str, password: str) -> bool:
    """Whether ``role``'s stored SCRAM verifier is ``password``'s (RFC 5802): the test
    server trusts local logins, so logging in would not check it."""
    with admin.connect() as conn:
        stored = conn.scalar(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}
        )
    method, rest = str(stored).split("$", 1)
    assert method == "SCRAM-SHA-256"
    head, keys = rest.split("$")
    iterations, salt = head.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


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
