"""PostgreSQL's one-round-trip search (``_pipeline``): the same answers as the planned search,
a large user handed to their plan, a stale scope key read again, and the pooled connection
left as it was found (outside a transaction, autocommit off) after a flight that succeeded or
failed on the server, or dropped when it died or was cancelled midway. Both halves where
there are two."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from _watch import executed, postgres_round_trips, round_trips
from sqlalchemy import text

from muxi_isolation import Memory, Message, Scope
from muxi_isolation.errors import (
    DeadlineExceeded,
    SessionExpired,
    SessionNotFound,
    StorageUnavailable,
)
from muxi_isolation.records import Receipt, SessionRecord
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.sql import SQLBackend

HALVES = pytest.mark.parametrize("half", ["sync", "async"])

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
QUERY = [1.0, 0.25]
EVERYONE = {"all": True}  # a filter every row matches: the search planned through SQLAlchemy


def vectors(n: int, offset: float = 0.0) -> list[Memory]:
    return [Memory(f"m{i}", f"text {i}", {"all": True}, [1.0, i / 3 + offset]) for i in range(n)]


def searcher(store: SQLBackend, half: str) -> Callable[..., Awaitable[Any]]:
    async def search(user: Scope, k: int = 4, **options: Any) -> Any:
        if half == "sync":
            return store.search_memories(user, QUERY, k=k, **options)
        return await store.asearch_memories(user, QUERY, k=k, **options)

    return search


def answers(found: list[tuple[Memory, float]]) -> list[tuple[Any, ...]]:
    return [(m.id, m.content, m.metadata, m.embedding, m.created_at, m.scope, s) for m, s in found]


async def pooled(store: SQLBackend, half: str, look: Callable[[Any], Any]) -> Any:
    """``look`` at the half's pool's one psycopg connection as the calls left it (while
    checked out: the pool's reset of this unclaimed checkout comes after)."""
    if half == "sync":
        with store._engine.connect() as conn:
            return look(conn.connection.driver_connection)
    async with store._aengine.connect() as aconn:
        return look((await aconn.get_raw_connection()).driver_connection)


def state(db: Any) -> tuple[bool, str]:
    return db.autocommit, db.info.transaction_status.name


def pid(db: Any) -> int:
    return int(db.info.backend_pid)


@HALVES
async def test_one_round_trip_answers_as_the_planned_search(make_backend: Any, half: str) -> None:
    store = make_backend("postgres", embedding_dimension=2, pool_size=1, max_overflow=0)
    store.upsert_memories(ALICE, vectors(12))
    store.upsert_memories(BOB, vectors(3, offset=0.1))
    search = searcher(store, half)
    for user, k in [(ALICE, 4), (ALICE, 30), (BOB, 10), (Scope("tenant_a", "nobody"), 4)]:
        with postgres_round_trips(store) as traces:
            found = await search(user, k)
        assert sum(round_trips(traces)) == 1
        assert answers(found) == answers(await search(user, k, filter=EVERYONE))
        assert [m.scope.user_id for m, _ in found] == [user.user_id] * len(found)
    assert await pooled(store, half, state) == (False, "IDLE")


@HALVES
async def test_a_history_read_in_one_round_trip_answers_as_the_windowed_read(
    make_backend: Any, half: str
) -> None:
    """A whole history, its last N and a status (one flight) against the same read with a
    window (``limit``: SQLAlchemy's path); another session of hers reads as nothing."""
    store = make_backend("postgres", pool_size=1, max_overflow=0)
    scope = ALICE.with_session("s1")
    status = ["archived", "archived", "active", "active", "active", "active"]
    store.append_messages(
        scope, [Message("user", f"m{i}", {"i": i}, [], status[i]) for i in range(6)]
    )

    async def read(where: Scope, **window: Any) -> list[Message]:
        if half == "sync":
            return store.get_messages(where, **window)
        return await store.aget_messages(where, **window)

    for window in [{}, {"last": 3}, {"status": "active"}, {"last": 2, "status": "archived"}]:
        with postgres_round_trips(store) as traces:
            found = await read(scope, **window)
        assert sum(round_trips(traces)) == 1
        windowed = {**window, "limit": 100} if "last" not in window else None
        if windowed is not None:
            assert found == await read(scope, **windowed)
        assert found and {m.scope for m in found} == {scope}
    assert [m.content for m in await read(scope, last=3)] == ["m3", "m4", "m5"]
    assert [m.content for m in await read(scope, limit=2, offset=1)] == ["m1", "m2"]
    assert await read(ALICE.with_session("s2")) == []
    assert await pooled(store, half, state) == (False, "IDLE")


@HALVES
async def test_a_large_user_is_searched_by_their_plan_until_seen_small(
    make_backend: Any, half: str
) -> None:
    """The flight finds her past the threshold: her plan answers at once (her rows counted,
    her own HNSW index found); from then on one flight on her index answers alone; once
    forgotten, that flight finds fewer than k rows, her plan sees her small: flights again."""
    store = make_backend("postgres", embedding_dimension=2, ann_threshold=5, ann_index_delay=0)
    store.upsert_memories(ALICE, vectors(8))  # past the threshold: her own HNSW index
    search = searcher(store, half)
    with postgres_round_trips(store) as first, executed(store) as planned:
        found = [answers(await search(ALICE))]
    assert any("<=>" in sql and "found" in sql for sql in planned)  # the HNSW statement
    assert sum(round_trips(first)) > 2  # the flight, then her plan's transaction
    for _ in range(2):
        with postgres_round_trips(store) as then, executed(store) as sent:
            found.append(answers(await search(ALICE)))
        assert sum(round_trips(then)) == 1 and sent == []  # one flight, nothing planned
        assert all(f"'{name}'" in then[0] for name in ("enable_sort", "hnsw.ef_search"))
    assert found == [answers(await search(ALICE, filter=EVERYONE))] * 3
    store.forget_user(ALICE)
    store.upsert_memories(ALICE, vectors(2))
    with executed(store) as replanned:
        assert len(await search(ALICE)) == 2  # 2 < k: her plan, which sees her small
    assert replanned
    with postgres_round_trips(store) as small:
        assert len(await search(ALICE)) == 2
    assert sum(round_trips(small)) == 1


@HALVES
async def test_a_known_large_users_plan_is_made_again_after_a_while(
    make_backend: Any, postgres_admin: Any, half: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Her index dropped where this process cannot see (another process forgetting and
    rewriting her, an operator): the flight on it still answers exactly, and within
    ``_RECHECK`` her plan is made again, which finds no index and asks for one."""
    from muxi_isolation.stores.sql import _vectors
    from muxi_isolation.stores.sql._ann_index import index_name

    store = make_backend("postgres", embedding_dimension=2, ann_threshold=5, ann_index_delay=0)
    store.upsert_memories(ALICE, vectors(8))
    search = searcher(store, half)
    exact = answers(await search(ALICE, filter=EVERYONE))
    await search(ALICE)  # her plan: her index found
    asked: list[Scope] = []
    monkeypatch.setattr(store.vectors, "wants_index", asked.append)
    index = f'"{store.tables.memories.schema}"."{index_name(store.tables, "tenant_a", "alice")}"'
    with postgres_admin.begin() as admin:
        admin.execute(text(f"DROP INDEX {index}"))
    with postgres_round_trips(store) as traces:
        assert answers(await search(ALICE)) == exact
    assert sum(round_trips(traces)) == 1 and asked == []
    monkeypatch.setattr(_vectors, "_RECHECK", 0.0)
    with executed(store) as replanned:
        assert answers(await search(ALICE)) == exact
    assert replanned and asked == [ALICE]
    monkeypatch.undo()
    with executed(store) as planned_again:  # no index found: her plan until one is
        assert answers(await search(ALICE)) == exact
    assert planned_again


@HALVES
async def test_a_flight_past_its_deadline_leaves_the_connection_as_found(
    make_backend: Any, postgres_admin: Any, half: str
) -> None:
    """The search waits on a lock held elsewhere until ``lock_timeout``: the flight fails on
    the server after BEGIN and ``scope_enter`` ran, so it is rolled back; the one pooled
    connection then serves the next search, outside a transaction, autocommit off."""
    store = make_backend(
        "postgres", embedding_dimension=2, statement_timeout=0.5, pool_size=1, max_overflow=0
    )
    store.upsert_memories(ALICE, vectors(3))
    search = searcher(store, half)
    await search(ALICE)
    before = await pooled(store, half, pid)
    table = store._engine.dialect.identifier_preparer.format_table(store.tables.memories)
    with postgres_admin.begin() as admin:
        admin.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(DeadlineExceeded):
            await search(ALICE)
    assert await pooled(store, half, state) == (False, "IDLE")
    assert len(await search(ALICE)) == 3
    assert await pooled(store, half, pid) == before  # kept, not replaced


@HALVES
async def test_a_flight_whose_connection_dies_is_unavailable_and_the_next_one_reconnects(
    make_backend: Any, postgres_admin: Any, half: str
) -> None:
    store = make_backend("postgres", embedding_dimension=2, pool_size=1, max_overflow=0)
    store.upsert_memories(ALICE, vectors(3))
    search = searcher(store, half)
    await search(ALICE)  # the async pool's connection exists too
    killed = await pooled(store, half, pid)
    with postgres_admin.begin() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": killed})
    with pytest.raises(StorageUnavailable):
        await search(ALICE)
    assert len(await search(ALICE)) == 3
    assert await pooled(store, half, state) == (False, "IDLE")


@HALVES
async def test_a_stale_scope_key_is_read_again_and_the_search_retried(
    make_backend: Any, half: str
) -> None:
    store = make_backend("postgres", embedding_dimension=2)
    store.upsert_memories(ALICE, vectors(3))
    key = store._scope_key
    store._scope_key = b"\x00" * 32  # as if ours were rotated away: it verifies under no key
    assert len(await searcher(store, half)(ALICE)) == 3
    assert store._scope_key == key


async def test_a_flight_cancelled_midway_drops_its_connection(
    make_backend: Any, postgres_admin: Any
) -> None:
    """An async search cancelled while its flight waits on the server: the connection is in
    an unknown state (pipeline mode, autocommit, a statement running), so the pool never
    hands it out again; the next search gets a new one."""
    store = make_backend("postgres", embedding_dimension=2, pool_size=1, max_overflow=0)
    store.upsert_memories(ALICE, vectors(3))
    await store.asearch_memories(ALICE, QUERY, k=4)
    before = await pooled(store, "async", pid)
    table = store._engine.dialect.identifier_preparer.format_table(store.tables.memories)
    with postgres_admin.begin() as admin:
        admin.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        waiting = asyncio.ensure_future(store.asearch_memories(ALICE, QUERY, k=4))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert len(await store.asearch_memories(ALICE, QUERY, k=4)) == 3
    assert await pooled(store, "async", state) == (False, "IDLE")
    assert await pooled(store, "async", pid) != before


@HALVES
async def test_without_pipeline_mode_the_reads_take_their_transaction_as_before(
    make_backend: Any, monkeypatch: pytest.MonkeyPatch, half: str
) -> None:
    """A libpq before 14 has no pipeline mode (psycopg says so): the backend made there
    searches and reads in a scoped transaction of four round trips, with the same answers.
    (The libpq here has it: psycopg's answer is the one thing replaced.)"""
    import psycopg

    monkeypatch.setattr(psycopg.capabilities, "has_pipeline", lambda *_a, **_k: False)
    store = make_backend("postgres", embedding_dimension=2)
    store.upsert_memories(ALICE, vectors(5))
    scope = ALICE.with_session("s1")
    store.append_messages(scope, [Message("user", "hello")])
    search = searcher(store, half)
    with postgres_round_trips(store) as traces:
        found = await search(ALICE)
        read = store.get_messages(scope) if half == "sync" else await store.aget_messages(scope)
    assert round_trips(traces) == [4, 4]
    assert answers(found) == answers(await search(ALICE, filter=EVERYONE))
    assert [m.content for m in read] == ["hello"]


def appender(store: SQLBackend, half: str) -> Callable[..., Awaitable[list[Message]]]:
    async def append(scope: Scope, messages: list[Message], **options: Any) -> list[Message]:
        now = datetime.now(timezone.utc)
        when = {"now": now, "expires_at": now + timedelta(hours=1), **options}
        if half == "sync":
            return store.append_to_session(scope, messages, **when)
        return await store.aappend_to_session(scope, messages, **when)

    return append


KINDS = [  # every kind of content, metadata and tool calls a message holds
    Message("user", "plain", {}, []),
    Message("assistant", [{"type": "text", "text": 'a "block"\\'}], {"n": 1.5, "é": [None]}, []),
    Message("assistant", "", {}, [{"id": "c1", "name": "f", "args": {"a": [1, True]}}]),
    Message("tool", '{"a": 1}', {"q": "\u2028"}, [], "archived"),
]


@HALVES
async def test_a_plain_append_is_one_round_trip_and_stores_as_the_usual_path(
    make_backend: Any, half: str
) -> None:
    """An append to her session, no receipt: BEGIN, scope_enter, the touch, the seqs and
    the insert in one statement, COMMIT, in one flight. What it answers is what a read
    gives back, and what the usual path (pipelines off) stores, seq for seq."""
    store = make_backend("postgres", pool_size=1, max_overflow=0)
    usual = make_backend("postgres")
    usual._pipelines = False
    append, append_usual = appender(store, half), appender(usual, half)
    for backend in (store, usual):
        SessionManager(backend).create(ALICE, session_id="s1")
    scope = ALICE.with_session("s1")
    first = await append(scope, KINDS[:1])
    with postgres_round_trips(store) as traces:
        stored = first + await append(scope, KINDS[1:])
    assert sum(round_trips(traces)) == 1
    assert [m.seq for m in stored] == [1, 2, 3, 4]
    assert stored == store.get_messages(scope)
    expected = await append_usual(scope, KINDS[:1]) + await append_usual(scope, KINDS[1:])

    def kept(messages: list[Message]) -> list[tuple[Any, ...]]:
        return [(m.role, m.content, m.metadata, m.tool_calls, m.status, m.seq) for m in messages]

    assert kept(stored) == kept(expected) == kept(usual.get_messages(scope))
    assert await pooled(store, half, state) == (False, "IDLE")


@HALVES
async def test_an_append_to_a_missing_or_expired_session_writes_nothing(
    make_backend: Any, half: str
) -> None:
    """The flight's touch finds no active session: the statement writes nothing (no seq is
    reserved) and says whether the session exists, so the append fails as on the usual
    path, in the one round trip; the next append to a live session numbers on."""
    store = make_backend("postgres")
    append = appender(store, half)
    SessionManager(store).create(ALICE, session_id="s1")
    scope = ALICE.with_session("s1")
    with postgres_round_trips(store) as missing, pytest.raises(SessionNotFound):
        await append(ALICE.with_session("nope"), KINDS[:1])
    later = datetime.now(timezone.utc) + timedelta(days=2)  # past the session's expiry
    with postgres_round_trips(store) as expired, pytest.raises(SessionExpired):
        await append(scope, KINDS[:1], now=later, expires_at=later + timedelta(hours=1))
    assert sum(round_trips(missing)) == sum(round_trips(expired)) == 1
    assert store.get_messages(scope) == [] and store.get_messages(ALICE.with_session("nope")) == []
    assert [m.seq for m in await append(scope, KINDS[:2])] == [1, 2]


@HALVES
async def test_an_append_with_a_receipt_or_a_new_session_takes_the_usual_path(
    make_backend: Any, half: str
) -> None:
    store = make_backend("postgres")
    append = appender(store, half)
    scope = ALICE.with_session("s1")
    now = datetime.now(timezone.utc)
    record = SessionRecord("s1", ALICE, now, now, now + timedelta(hours=1))
    with postgres_round_trips(store) as created:
        await append(scope, KINDS[:1], create=record)
    receipt = Receipt("k1", "digest", {"ok": True})
    with postgres_round_trips(store) as receipted:
        stored = await append(scope, KINDS[:1], receipt=receipt)
    assert sum(round_trips(created)) > 1 and sum(round_trips(receipted)) > 1
    assert [m.seq for m in stored] == [2]
    assert store.get_receipt(ALICE, "k1") is not None
