"""The maintenance path on PostgreSQL with row-level security forced on the owner too.

The suite's usual ``admin_url`` is a superuser, which skips row-level security; here the
tables belong to an ordinary role (no superuser, no BYPASSRLS), as in production. That
owner finds every tenant only through its read-only listing policy, purges and forgets
through the tenant admin path, and the app's role can use neither.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from muxi_isolation import Memory, Message, Scope, SessionRecord
from muxi_isolation.stores.sql import SQLBackend

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
USERS = [Scope("tenant_a", "alice"), Scope("tenant_a", "bob"), Scope("tenant_b", "carol")]


@pytest.fixture
def owned(postgres_urls: Any, postgres_admin: Any) -> Iterator[tuple[SQLBackend, Any, Any]]:
    """A backend whose tables an ordinary role owns (the suite's owner role, tests/conftest.py);
    with raw engines for owner and app."""
    schema = f"o_{secrets.token_hex(5)}"
    backend = SQLBackend(
        postgres_urls.app, admin_url=postgres_urls.owner, schema=schema, embedding_dimension=2
    )
    owner = create_engine(postgres_urls.owner, poolclass=NullPool)
    app = create_engine(postgres_urls.app, poolclass=NullPool)
    yield backend, owner, app
    backend.close()
    owner.dispose()
    app.dispose()
    with postgres_admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def fill(backend: SQLBackend) -> None:
    for user in USERS:
        for sid, expires in (("old", T0 - timedelta(hours=2)), ("live", T0 + timedelta(hours=1))):
            backend.insert_session(user, SessionRecord(sid, user, T0, T0, expires))
            backend.append_messages(user.with_session(sid), [Message("user", f"{user} {sid}")])
        backend.upsert_memories(user, [Memory("m", "kept", {}, [1.0, 0.0])])


def raw_tenants(engine: Any, table: str, **settings: str) -> set[str]:
    with engine.begin() as conn:
        for name, value in settings.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": f"muxi.{name}", "v": value})
        return set(conn.scalars(text(f"SELECT tenant_id FROM {table}")))


def test_the_owner_is_an_ordinary_role(owned: tuple[SQLBackend, Any, Any]) -> None:
    backend, owner, _ = owned
    fill(backend)
    assert backend.rls_enforced()
    with owner.connect() as conn:
        row = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
    assert tuple(row) == (False, False)


def test_listing_purging_and_forgetting_work_under_forced_rls(
    owned: tuple[SQLBackend, Any, Any],
) -> None:
    backend, owner, app = owned
    fill(backend)
    sessions = f'"{backend.tables.sessions.schema}"."{backend.tables.sessions.name}"'
    # the owner sees nothing without a setting, everything only through the listing policy
    assert raw_tenants(owner, sessions) == set()
    assert raw_tenants(owner, sessions, admin="list") == {"tenant_a", "tenant_b"}
    # ... which is read-only, and the app's role is not in it
    with owner.begin() as conn:
        conn.execute(text("SELECT set_config('muxi.admin', 'list', true)"))
        assert conn.execute(text(f"DELETE FROM {sessions}")).rowcount == 0
    assert raw_tenants(app, sessions, admin="list") == set()
    assert raw_tenants(app, sessions, admin="on", tenant_id="tenant_a") == set()

    assert backend.list_tenants() == ["tenant_a", "tenant_b"]
    assert backend.purge_expired(T0) == {"sessions": 3, "messages": 3}
    for user in USERS:
        assert [s.id for s in backend.list_sessions(user)] == ["live"]
        assert backend.count_memories(user) == 1
    assert backend.forget_tenant("tenant_a") == {"sessions": 2, "messages": 2, "memories": 2}
    assert backend.list_tenants() == ["tenant_b"]


async def test_async_twins_under_forced_rls(owned: tuple[SQLBackend, Any, Any]) -> None:
    backend, _, _ = owned
    fill(backend)
    assert await backend.alist_tenants() == ["tenant_a", "tenant_b"]
    assert await backend.apurge_expired(T0, tenant_id="tenant_b") == {"sessions": 1, "messages": 1}
    assert await backend.aforget_tenant("tenant_b") == {"sessions": 1, "messages": 1, "memories": 1}
