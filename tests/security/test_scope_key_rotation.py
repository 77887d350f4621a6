"""The key behind PostgreSQL's signed scope rotates without downtime.

A second backend (another app process) keeps serving traffic, sync and async, while the key
is rotated and the old one dropped: no call fails, nothing is lost, and afterwards the old key
opens nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from muxi_isolation import Memory, Scope, cli
from muxi_isolation.errors import ConfigError
from muxi_isolation.stores.sql import SQLBackend, _rls

USERS = [Scope("tenant_a", f"user{i}") for i in range(3)]


@pytest.fixture
def two_apps(postgres_urls: Any, postgres_admin: Any) -> Iterator[tuple[SQLBackend, SQLBackend]]:
    """Two backends on one schema: the operator's and a running app's."""
    schema = f"k_{secrets.token_hex(5)}"
    apps = [
        SQLBackend(
            postgres_urls.app,
            admin_url=postgres_urls.admin,
            schema=schema,
            embedding_dimension=None,
        )
        for _ in range(2)
    ]
    yield apps[0], apps[1]
    for app in apps:
        app.close()
    with postgres_admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def keys(admin: Any, backend: SQLBackend) -> list[int]:
    table = _rls.key_table(backend.tables)
    with admin.connect() as conn:
        return list(
            conn.execute(
                text(f'SELECT id FROM "{table.schema}"."{table.name}" ORDER BY id')
            ).scalars()
        )


def test_traffic_runs_through_a_rotation_without_a_failure(
    two_apps: tuple[SQLBackend, SQLBackend], postgres_admin: Any
) -> None:
    operator, app = two_apps
    app.setup()
    old_key = app._scope_key
    written: list[tuple[Scope, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def sync_traffic(user: Scope) -> None:
        n = after = 0
        while after < 3:  # until three calls have run after the old key was dropped
            after += stop.is_set()
            try:
                app.upsert_memories(user, [Memory(f"s{n}", "x", {}, None)])
                written.append((user, f"s{n}"))
                app.list_memories(user)
            except BaseException as exc:  # any failure at all is the finding
                failures.append(exc)
                return
            n += 1

    async def async_traffic(user: Scope) -> None:
        n = after = 0
        while after < 3:
            after += stop.is_set()
            try:
                await app.aupsert_memories(user, [Memory(f"a{n}", "x", {}, None)])
                written.append((user, f"a{n}"))
                await app.alist_memories(user)
            except BaseException as exc:
                failures.append(exc)
                return
            n += 1

    threads = [threading.Thread(target=sync_traffic, args=(u,)) for u in USERS[:2]]
    threads.append(threading.Thread(target=asyncio.run, args=(async_traffic(USERS[2]),)))
    for thread in threads:
        thread.start()
    try:
        assert operator.rotate_scope_key() == 2
        assert keys(postgres_admin, operator) == [0, 1, 2]
        assert operator.rotate_scope_key(finish=True) == 1
        assert keys(postgres_admin, operator) == [0, 2]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert app._scope_key != old_key and app._scope_key == operator._scope_key
    for user in USERS:
        stored = {m.id for m in operator.list_memories(user)}
        assert stored == {mid for who, mid in written if who == user}


def test_a_dropped_key_opens_nothing(two_apps: tuple[SQLBackend, SQLBackend]) -> None:
    operator, _ = two_apps
    operator.upsert_memories(USERS[0], [Memory("m", "secret", {}, None)])
    old_key = operator._scope_key
    assert old_key is not None
    operator.rotate_scope_key()
    operator.rotate_scope_key(finish=True)
    statement = operator._enter_statement
    assert statement is not None
    with (
        pytest.raises(Exception, match="does not verify"),
        operator._engine.connect() as conn,
        conn.begin(),
    ):
        _rls.enter_scope(conn, statement, USERS[0], old_key, citus=False)
    assert [m.id for m in operator.list_memories(USERS[0])] == ["m"]  # the new key works


async def test_an_async_caller_with_a_dropped_key_reads_the_new_one(
    two_apps: tuple[SQLBackend, SQLBackend],
) -> None:
    operator, app = two_apps
    await app.aupsert_memories(USERS[0], [Memory("m", "secret", {}, None)])
    operator.rotate_scope_key()
    operator.rotate_scope_key(finish=True)
    assert [m.id for m in await app.alist_memories(USERS[0])] == ["m"]
    assert app._scope_key == operator._scope_key


def test_rotation_is_for_postgresql(tmp_path: Any) -> None:
    backend = SQLBackend(f"sqlite:///{tmp_path / 'k.db'}", embedding_dimension=None)
    try:
        with pytest.raises(ConfigError, match="PostgreSQL"):
            backend.rotate_scope_key()
    finally:
        backend.close()


def test_the_cli_rotates_and_finishes(
    postgres_urls: Any, postgres_admin: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = f"k_{secrets.token_hex(5)}"
    with postgres_admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{postgres_urls.app.username}"'))
    in_schema = f"options=-csearch_path%3D{schema}%2Cpublic"
    app = postgres_urls.app.render_as_string(hide_password=False)
    admin = postgres_urls.admin
    config = tmp_path / "muxi.yaml"
    config.write_text(
        "memory:\n  persistent:\n    provider: postgresql\n"
        f"    connection_string: '{app}{'&' if '?' in app else '?'}{in_schema}'\n"
        f"    admin_connection_string: '{admin}{'&' if '?' in admin else '?'}{in_schema}'\n"
        "    embedding_dimension: 8\n"
    )
    try:
        assert cli.main(["rotate-scope-key", "--config", str(config)]) == 0
        assert "added scope key 2" in capsys.readouterr().out
        assert cli.main(["rotate-scope-key", "--config", str(config), "--finish"]) == 0
        assert "dropped 1 old scope key;" in capsys.readouterr().out
        with postgres_admin.connect() as conn:
            ids = conn.execute(text(f'SELECT id FROM "{schema}".muxi_scope_key')).scalars()
            assert list(ids) == [0, 2]
    finally:
        with postgres_admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
