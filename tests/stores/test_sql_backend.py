"""The SQL backend beyond the shared suite: URLs, transactions, concurrency, errors, schema."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from muxi_isolation import (
    ConfigError,
    InvalidInput,
    Memory,
    Message,
    Scope,
    SessionExists,
    SessionRecord,
    StorageError,
    StorageUnavailable,
    policy,
)
from muxi_isolation.stores import open_backend
from muxi_isolation.stores.sql import SCHEMA_VERSION, SQLBackend, _schema, _sqlite_append
from muxi_isolation.stores.sql._urls import resolve_url

ALICE = Scope("tenant_a", "alice")
T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)


# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", ":memory:", "sqlite:///"])
def test_memory_urls(url: str) -> None:
    target = resolve_url(url)
    assert target.memory and target.dialect == "sqlite"
    assert target.sync_url.query["mode"] == "memory"
    assert target.sync_url.database == target.async_url.database  # one database for both


@pytest.mark.parametrize(
    ("url", "sync", "async_"),
    [
        ("sqlite:///data/x.db", "sqlite+pysqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("postgresql://u:p@h:5/db", "postgresql+psycopg://u:***@h:5/db", None),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db", None),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg://u@h/db", None),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql+psycopg://postgres:***@/postgres?host=%2Ftmp%2Fpg",
            None,
        ),
    ],
)
def test_sql_urls(url: str, sync: str, async_: str | None) -> None:
    target = resolve_url(url)
    assert str(target.sync_url) == sync
    assert str(target.async_url) == (async_ or sync)


@pytest.mark.parametrize("url", ["mysql://h/db", "redis://x", "not a url"])
def test_unsupported_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


@pytest.mark.parametrize("prefix", ["Muxi_", "x-y", "a" * 41, "1abc", 'x"'])
def test_bad_table_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError):
        SQLBackend("sqlite://", table_prefix=prefix)


def test_schema_is_for_postgres_only() -> None:
    with pytest.raises(ConfigError):
        SQLBackend("sqlite://", schema="x")


async def test_memory_database_is_shared_by_sync_and_async_and_private() -> None:
    one, two = SQLBackend("sqlite://"), SQLBackend("sqlite://")
    try:
        one.upsert_memories(ALICE, [Memory("m", "sync wrote")])
        assert [m.content for m in await one.alist_memories(ALICE)] == ["sync wrote"]
        await one.aupsert_memories(ALICE, [Memory("n", "async wrote")])
        assert one.count_memories(ALICE) == 2
        assert two.count_memories(ALICE) == 0
        texts = await asyncio.gather(*(one.acount_memories(ALICE) for _ in range(20)))
        assert texts == [2] * 20
    finally:
        await one.aclose()
        two.close()


def test_custom_prefix_names_the_tables(make_backend) -> None:
    backend = make_backend("sqlite", table_prefix="app_")
    backend.upsert_memories(ALICE, [Memory("m", "x")])
    with backend._engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert {"app_sessions", "app_messages", "app_memories", "app_schema_version"} <= names


# -- transactions and concurrency -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_batch_with_an_unstorable_row_writes_nothing(make_backend, kind: str) -> None:
    """Refused whole before any write (a failure inside the database: test_faults.py)."""
    backend = make_backend(kind)
    scope = ALICE.with_session("s1")
    backend.append_messages(scope, [Message("user", "before")])
    bad = Message("user", "x", status=None)  # type: ignore[arg-type]  # NOT NULL in SQL
    with pytest.raises(InvalidInput, match="status"):
        backend.append_messages(scope, [Message("user", "ok"), bad])
    assert [m.content for m in backend.get_messages(scope)] == ["before"]
    [after] = backend.append_messages(scope, [Message("user", "after")])
    assert after.seq == 2  # the failed append reserved nothing


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_memory_batch_with_an_unstorable_row_writes_nothing(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    with pytest.raises(InvalidInput, match="content"):
        backend.upsert_memories(ALICE, [Memory("a", "fine"), Memory("b", None)])  # type: ignore[arg-type]
    assert backend.count_memories(ALICE) == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("value", [object(), float("nan"), {1, 2}])
def test_values_json_cannot_hold_are_value_errors(make_backend, kind: str, value: object) -> None:
    backend = make_backend(kind)
    scope = ALICE.with_session("s1")
    with pytest.raises(ValueError):
        backend.append_messages(scope, [Message("user", "ok"), Message("user", value)])
    with pytest.raises(ValueError):
        backend.upsert_memories(ALICE, [Memory("a", "ok"), Memory("b", "x", {"v": value})])
    assert backend.get_messages(scope) == [] and backend.count_memories(ALICE) == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_appends_to_one_session_get_distinct_seqs(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    scope = ALICE.with_session("busy")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(8):
                pair = [Message("user", f"{n}-{i}a"), Message("user", f"{n}-{i}b")]
                backend.append_messages(scope, pair)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = backend.get_messages(scope)
    assert [m.seq for m in got] == list(range(1, 6 * 8 * 2 + 1))
    for n in range(6):  # each append's pair stayed adjacent and in order
        mine = [m for m in got if m.content.startswith(f"{n}-")]
        assert [m.content for m in mine] == [f"{n}-{i}{x}" for i in range(8) for x in "ab"]
        pairs = [(a.seq, b.seq) for a, b in zip(mine[::2], mine[1::2])]
        assert all(b == a + 1 for a, b in pairs)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_concurrent_async_appends_to_one_session(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    scope = ALICE.with_session("busy")
    writes = (backend.aappend_messages(scope, [Message("user", str(i))]) for i in range(25))
    await asyncio.gather(*writes)
    got = await backend.aget_messages(scope)
    assert sorted(m.seq for m in got) == list(range(1, 26))
    assert sorted(int(m.content) for m in got) == list(range(25))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_seq_is_never_reused_after_deleting_the_newest(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    scope = ALICE.with_session("s")
    stored = backend.append_messages(scope, [Message("user", "a"), Message("user", "b")])
    assert stored[1].seq is not None
    backend.delete_message(scope, stored[1].seq)
    [again] = backend.append_messages(scope, [Message("user", "c")])
    assert again.seq == 3


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_naive_datetimes_are_utc(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    naive = datetime(2026, 1, 8, 10, 0)
    backend.insert_session(ALICE, SessionRecord("s", ALICE, naive, naive, naive))
    got = backend.get_session(ALICE, "s")
    assert got is not None and got.created_at == T0 and got.created_at.tzinfo is timezone.utc


async def test_sqlite_stores_every_timestamp_in_one_text_form(make_backend) -> None:
    """The append's driver-SQL paths bind datetimes as SQLAlchemy does elsewhere: a whole
    second kept its ``.000000`` (sqlite3's own adapter dropped it, so text comparisons
    and sorting mixed two forms)."""
    backend = make_backend("sqlite")
    scope = ALICE.with_session("s")
    backend.insert_session(ALICE, SessionRecord("s", ALICE, T0, T0, T0))
    assert backend.touch_session(ALICE, "s", T0, T0 + timedelta(hours=1))
    backend.append_messages(scope, [Message("user", "a", created_at=T0)])
    await backend.aappend_messages(scope, [Message("user", "b", created_at=T0)])
    with backend._engine.connect() as conn:
        times = conn.execute(text("SELECT created_at FROM muxi_messages")).scalars().all()
        session = conn.execute(text("SELECT last_active_at, expires_at FROM muxi_sessions"))
        stamps = [*times, *session.one()]
    assert stamps == [*["2026-01-08 10:00:00.000000"] * 3, "2026-01-08 11:00:00.000000"]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_duplicate_session_is_session_exists_with_cause(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    record = SessionRecord("s", ALICE, T0, T0, T0)
    backend.insert_session(ALICE, record)
    with pytest.raises(SessionExists) as caught:
        backend.insert_session(ALICE, record)
    assert caught.value.__cause__ is not None


def test_unreachable_postgres_is_storage_unavailable(tmp_path) -> None:
    backend = SQLBackend(f"postgresql://nobody@/db?host={tmp_path}&connect_timeout=2")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            backend.list_memories(ALICE)
        assert caught.value.__cause__ is not None
    finally:
        backend.close()


async def test_unreachable_database_async(tmp_path) -> None:
    backend = SQLBackend(f"postgresql://nobody@/db?host={tmp_path}&connect_timeout=2")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await backend.alist_memories(ALICE)
        assert caught.value.__cause__ is not None
    finally:
        await backend.aclose()


def test_unopenable_sqlite_file_is_storage_unavailable(tmp_path) -> None:
    # (sync only: aiosqlite's failed connect leaves a stop request racing the closing loop)
    backend = SQLBackend(f"sqlite:///{tmp_path}/missing/dir/x.db")
    try:
        with pytest.raises(StorageUnavailable):
            backend.list_memories(ALICE)
    finally:
        backend.close()


# -- schema version and upgrades --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_schema_version_is_recorded(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    backend.setup()
    with backend._engine.connect() as conn:
        assert _schema.read_version(conn, backend.tables) == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    first = SQLBackend(url)
    first.setup()
    with first._engine.begin() as conn:
        conn.execute(first.tables.version.update().values(version=SCHEMA_VERSION + 1))
    first.close()
    later = SQLBackend(url)
    try:
        with pytest.raises(StorageError, match=r"newer|upgrade"):
            later.list_memories(ALICE)
    finally:
        later.close()


def test_upgrade_steps_run_in_order(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    old = SQLBackend(url)
    old.upsert_memories(ALICE, [Memory("m", "kept")])
    old.close()
    ran: list[int] = []

    def step(conn, tables) -> None:
        ran.append(SCHEMA_VERSION)
        conn.execute(text(f"CREATE INDEX up_test ON {tables.memories.name} (content)"))

    monkeypatch.setattr(_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(_schema.UPGRADES, SCHEMA_VERSION, step)
    new = SQLBackend(url)
    try:
        assert [m.content for m in new.list_memories(ALICE)] == ["kept"]
        with new._engine.connect() as conn:
            assert _schema.read_version(conn, new.tables) == SCHEMA_VERSION + 1
        assert ran == [SCHEMA_VERSION]
    finally:
        new.close()


def test_two_backends_on_one_postgres_schema_install_once(make_backend, postgres_urls) -> None:
    first = make_backend("postgres")
    first.upsert_memories(ALICE, [Memory("m", "x")])
    schema = first.tables.memories.schema
    second = SQLBackend(postgres_urls.app, admin_url=postgres_urls.admin, schema=schema)
    try:
        assert [m.id for m in second.list_memories(ALICE)] == ["m"]
    finally:
        second.close()


# -- construction and lifecycle -----------------------------------------------------------------


@pytest.mark.parametrize("dimension", [0, -3, 2.5, "8"])
def test_a_bad_embedding_dimension_is_refused(dimension: object) -> None:
    with pytest.raises(ConfigError, match="embedding_dimension"):
        SQLBackend("sqlite://", embedding_dimension=dimension)  # type: ignore[arg-type]


def test_an_empty_prefix_names_the_tables_plainly(make_backend) -> None:
    backend = make_backend("sqlite", table_prefix="")
    backend.upsert_memories(ALICE, [Memory("m", "x")])
    with backend._engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert {"sessions", "messages", "memories", "schema_version"} <= names
    assert [m.content for m in backend.list_memories(ALICE)] == ["x"]


def test_repr_never_shows_a_password() -> None:
    backend = SQLBackend(
        "postgresql://app:s3cret-pw@db.example/app",
        admin_url="postgresql://owner:0wner-pw@db.example/app",
    )
    try:
        shown = repr(backend)
        assert "db.example/app" in shown and "***" in shown
        assert "s3cret-pw" not in shown and "0wner-pw" not in shown
    finally:
        backend.close()


async def test_closing_twice_is_harmless_and_the_file_keeps_the_data(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    first = SQLBackend(url)
    await first.aupsert_memories(ALICE, [Memory("m", "kept")])
    await first.aclose()
    await first.aclose()
    second = SQLBackend(url)
    try:
        assert [m.content for m in second.list_memories(ALICE)] == ["kept"]
    finally:
        second.close()
        second.close()


def test_a_file_that_is_not_sqlite_is_a_storage_error_and_stays_untouched(tmp_path) -> None:
    path = tmp_path / "notes.db"
    garbage = b"these are my notes, not a database\n" * 200
    path.write_bytes(garbage)
    backend = SQLBackend(f"sqlite:///{path}")
    try:
        with pytest.raises(StorageError, match="not a database"):
            backend.upsert_memories(ALICE, [Memory("m", "x")])
    finally:
        backend.close()
    assert path.read_bytes() == garbage


def test_sqlite_with_an_admin_url_serves_the_tenant_path(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    backend = SQLBackend(url, admin_url=url)
    bob_b = Scope("tenant_b", "bob")
    try:
        for user in (ALICE, bob_b):
            backend.upsert_memories(user, [Memory("m", f"{user}'s")])
        assert backend.list_tenants() == ["tenant_a", "tenant_b"]
        assert backend.forget_tenant("tenant_a") == {"sessions": 0, "messages": 0, "memories": 1}
        assert backend.list_memories(ALICE) == []
        assert [m.content for m in backend.list_memories(bob_b)] == ["tenant_b:bob's"]
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_purge_works_through_many_batches(make_backend, monkeypatch, kind: str) -> None:
    from muxi_isolation.stores.sql import _admin

    monkeypatch.setattr(_admin, "PURGE_BATCH", 2)
    backend = make_backend(kind)
    bob = Scope("tenant_a", "bob")
    for user in (ALICE, bob):
        for n in range(5):
            at = T0 + timedelta(minutes=n)
            backend.insert_session(user, SessionRecord(f"s{n}", user, at, at, at))
            backend.append_messages(user.with_session(f"s{n}"), [Message("user", f"m{n}")])
        backend.insert_session(user, SessionRecord("live", user, T0, T0, T0 + timedelta(days=9)))
    cutoff = T0 + timedelta(hours=1)
    assert backend.purge_expired(cutoff, tenant_id="tenant_a") == {"sessions": 10, "messages": 10}
    assert [s.id for s in backend.list_sessions(ALICE)] == ["live"]
    for n in range(3):
        at = T0 + timedelta(minutes=n)
        backend.insert_session(bob, SessionRecord(f"again{n}", bob, at, at, at))
    assert await backend.apurge_expired(cutoff) == {"sessions": 3, "messages": 0}
    assert [s.id for s in backend.list_sessions(bob)] == ["live"]


def test_sqlite_stores_a_memorys_time_in_the_same_text_form(make_backend) -> None:
    """The memories' driver-SQL upsert binds datetimes as the history's does (a whole second
    keeps its ``.000000``), so every stored timestamp has one text form."""
    backend = make_backend("sqlite")
    backend.upsert_memories(ALICE, [Memory("m1", "bees", created_at=T0)])
    with backend._engine.connect() as conn:
        stamp = conn.execute(text("SELECT created_at FROM muxi_memories")).scalar_one()
    assert stamp == "2026-01-08 10:00:00.000000"
    assert backend.list_memories(ALICE)[0].created_at == T0


def test_a_numbered_message_is_the_message_with_its_seq_and_time() -> None:
    """``numbered`` and ``policy.stamp`` spell out ``Message``'s fields (``replace`` was a
    quarter of an append): a field added to ``Message`` must be added there too, or this
    fails."""
    message = Message(
        "assistant", [{"type": "text"}], {"k": 1}, [{"id": "c"}], "archived", T0, 3, ALICE
    )
    assert _sqlite_append.numbered(message, 7, T0) == replace(message, seq=7, created_at=T0)
    here = ALICE.with_session("s1")
    assert policy.stamp(here, message) == replace(message, scope=here)
    assert [f.name for f in fields(Message)] == [
        *("role", "content", "metadata", "tool_calls", "status", "created_at", "seq", "scope")
    ]
