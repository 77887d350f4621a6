"""SQLite's append on the DB-API connection (``_sqlite_append``): every check the append
makes, on both halves, proven on that path.

Each test also asserts that the append sent no statement through SQLAlchemy's execution
(the async half: only SQLAlchemy's ``BEGIN IMMEDIATE``), so it tests the driver path and
not the SQLAlchemy one it replaced.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _watch import executed
from sqlalchemy import JSON, text
from sqlalchemy.dialects import sqlite

from muxi_isolation import (
    DeadlineExceeded,
    DuplicateRequest,
    Message,
    QuotaExceeded,
    Receipt,
    Scope,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    SessionRecord,
)
from muxi_isolation.quotas import Limits
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.sql import SQLBackend
from muxi_isolation.stores.sql._driver import bind_processor
from muxi_isolation.stores.sql._sqlite_append import json_text, sqlite_time
from muxi_isolation.stores.sql._types import UTCDateTime

HALVES = ["sync", "async"]
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")


async def call(backend: SQLBackend, half: str, name: str, *args: Any, **kwargs: Any) -> Any:
    if half == "sync":
        return getattr(backend, name)(*args, **kwargs)
    return await getattr(backend, "a" + name)(*args, **kwargs)


async def append(backend: SQLBackend, half: str, scope: Scope, *texts: str, **kw: Any) -> Any:
    """``append_to_session`` at ``now`` (default T0), checking it ran on the driver."""
    now = kw.pop("now", T0)
    messages = [Message("user", t) for t in texts]
    with executed(backend) as sent:
        try:
            return await call(
                backend,
                half,
                "append_to_session",
                scope,
                messages,
                now=now,
                expires_at=now + HOUR,
                **kw,
            )
        finally:
            assert set(sent) <= {"BEGIN IMMEDIATE"}, sent
            assert (half == "async") == bool(sent), sent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLBackend]:
    backend = SQLBackend(f"sqlite:///{tmp_path / 'a.db'}", embedding_dimension=None)
    backend.setup()  # the schema, before any statement is counted
    yield backend
    backend.close()


def open_session(backend: SQLBackend, user: Scope, sid: str = "s1") -> Scope:
    backend.insert_session(user, SessionRecord(sid, user, T0, T0, T0 + HOUR))
    return user.with_session(sid)


def seqs(backend: SQLBackend, scope: Scope) -> list[tuple[int | None, Any]]:
    return [(m.seq, m.content) for m in backend.get_messages(scope)]


@pytest.mark.parametrize("half", HALVES)
async def test_an_append_stores_numbers_and_extends_the_session(
    store: SQLBackend, half: str
) -> None:
    s = open_session(store, ALICE)
    later = T0 + timedelta(minutes=10)
    first = await append(store, half, s, "a", "b", now=later)
    again = await append(store, half, s, "c", now=later)
    assert [(m.seq, m.content, m.scope) for m in first + again] == [
        (1, "a", s),
        (2, "b", s),
        (3, "c", s),
    ]
    assert store.get_messages(s) == first + again  # read back exactly as answered
    record = store.get_session(ALICE, "s1")
    assert record is not None and (record.last_active_at, record.expires_at) == (
        later,
        later + HOUR,
    )


@pytest.mark.parametrize("half", HALVES)
async def test_an_expired_session_refuses_and_spends_no_seq(store: SQLBackend, half: str) -> None:
    s = open_session(store, ALICE)
    await append(store, half, s, "a")
    with pytest.raises(SessionExpired):
        await append(store, half, s, "late", now=T0 + 2 * HOUR)
    record = store.get_session(ALICE, "s1")
    assert record is not None and record.expires_at == T0 + HOUR  # not revived
    store.renew_session(ALICE, "s1", now=T0, expires_at=T0 + 3 * HOUR)
    await append(store, half, s, "b", now=T0 + 2 * HOUR)
    assert seqs(store, s) == [(1, "a"), (2, "b")]


@pytest.mark.parametrize("half", HALVES)
@pytest.mark.parametrize("who", ["another user", "another tenant", "no such session"])
async def test_a_session_not_the_callers_is_not_found(
    store: SQLBackend, half: str, who: str
) -> None:
    s = open_session(store, ALICE)
    scope = {
        "another user": BOB.with_session("s1"),
        "another tenant": Scope("tenant_b", "alice", "s1"),
        "no such session": ALICE.with_session("s2"),
    }[who]
    with pytest.raises(SessionNotFound):
        await append(store, half, scope, "intruder")
    assert seqs(store, s) == []
    record = store.get_session(ALICE, "s1")
    assert record is not None and record.last_active_at == T0  # not touched


@pytest.mark.parametrize("half", HALVES)
async def test_quotas_hold(store: SQLBackend, half: str) -> None:
    store.limits = Limits(max_sessions_per_user=1, max_message_bytes=8)
    s = open_session(store, ALICE)
    with pytest.raises(QuotaExceeded) as size:
        await call(
            store,
            half,
            "append_to_session",
            s,
            [Message("user", "x" * 9)],
            now=T0,
            expires_at=T0 + HOUR,
        )
    assert size.value.limit == "max_message_bytes"
    new = SessionRecord("s2", ALICE, T0, T0, T0 + HOUR)  # a second session: past the quota
    with pytest.raises(QuotaExceeded) as count:
        await append(store, half, ALICE.with_session("s2"), "hi", create=new)
    assert count.value.limit == "max_sessions_per_user"
    assert [r.id for r in store.list_sessions(ALICE)] == ["s1"]
    assert seqs(store, ALICE.with_session("s2")) == seqs(store, s) == []
    bob_new = SessionRecord("s2", BOB, T0, T0, T0 + HOUR)  # Bob's quota is his own
    assert [m.seq for m in await append(store, half, BOB.with_session("s2"), "hi", create=bob_new)]
    assert [r.id for r in store.list_sessions(BOB)] == ["s2"]


@pytest.mark.parametrize("half", HALVES)
async def test_create_stores_the_session_first_and_refuses_a_twin(
    store: SQLBackend, half: str
) -> None:
    scope = ALICE.with_session("s1")
    record = SessionRecord("s1", ALICE, T0, T0, T0 + HOUR)
    assert [m.content for m in await append(store, half, scope, "a", create=record)] == ["a"]
    with pytest.raises(SessionExists):
        await append(store, half, scope, "b", create=record)
    assert seqs(store, scope) == [(1, "a")]


@pytest.mark.parametrize("half", HALVES)
async def test_a_receipt_is_stored_with_its_seqs_and_refuses_a_replay(
    store: SQLBackend, half: str
) -> None:
    s = open_session(store, ALICE)
    receipt = Receipt("k1", "req", {"answer": 1})
    stored = await append(store, half, s, "a", "b", receipt=receipt)
    kept = store.get_receipt(ALICE, "k1")
    assert kept is not None and (kept.seqs, kept.response) == ((1, 2), {"answer": 1})
    with pytest.raises(DuplicateRequest):
        await append(store, half, s, "a", "b", receipt=receipt)
    assert store.get_messages(s) == stored
    # a receipt past its window is replaced, and the append goes through
    stale = Receipt("k1", "req", {"answer": 2}, created_at=T0 + timedelta(days=2))
    await append(store, half, s, "c", receipt=stale, now=T0 + timedelta(minutes=5))
    kept = store.get_receipt(ALICE, "k1")
    assert kept is not None and (kept.seqs, kept.response) == ((3,), {"answer": 2})


@pytest.mark.parametrize("half", HALVES)
async def test_a_retried_append_is_answered_from_its_receipt(store: SQLBackend, half: str) -> None:
    manager = SessionManager(store)
    s = ALICE.with_session(manager.create(ALICE).id)
    messages = [Message("user", "hi"), Message("assistant", "hello")]
    method = manager.append if half == "sync" else manager.aappend

    async def send() -> list[Message]:
        with executed(store) as sent:
            answer = method(s, messages, idempotency_key="k")
            result: list[Message] = answer if half == "sync" else await answer  # type: ignore[misc]
        assert not [q for q in sent if "muxi_messages" in q and "INSERT" in q], sent
        return result

    first = await send()
    assert await send() == first  # the replay writes nothing
    assert store.get_messages(s) == first


def test_two_threads_appending_to_one_session_keep_seq_order(store: SQLBackend) -> None:
    s = open_session(store, ALICE)  # active until 2030: the manager's clock is the real one
    manager = SessionManager(store)
    barrier = threading.Barrier(4)
    answers: list[list[Message]] = []

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(25):
            answers.append(manager.append(s, [Message("user", f"{n}.{i}.q"), Message("user", "a")]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    with executed(store) as sent:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sent == []  # all 100 appends ran on the driver
    stored = store.get_messages(s)
    assert [m.seq for m in stored] == list(range(1, 201))
    for pair in answers:  # each append's messages got consecutive seqs, in its order
        assert [m.seq for m in pair] == [pair[0].seq, (pair[0].seq or 0) + 1]
    for n in range(4):  # each writer's appends are in its own order
        mine = [str(m.content) for m in stored if str(m.content).startswith(f"{n}.")]
        assert mine == [f"{n}.{i}.q" for i in range(25)]


@pytest.mark.parametrize("half", HALVES)
async def test_a_locked_file_is_a_deadline_and_the_connection_is_reused(
    tmp_path: Path, half: str
) -> None:
    path = tmp_path / "locked.db"
    backend = SQLBackend(f"sqlite:///{path}", embedding_dimension=None, busy_timeout=0.2)
    try:
        s = open_session(backend, ALICE)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(DeadlineExceeded) as info:
                await append(backend, half, s, "a")
            assert isinstance(info.value.__cause__.__cause__, sqlite3.OperationalError)  # type: ignore[union-attr]
        finally:
            other.execute("ROLLBACK")
            other.close()
        await append(backend, half, s, "b")  # the pooled connection is not left mid-transaction
        assert seqs(backend, s) == [(1, "b")]
    finally:
        backend.close()


async def test_a_temp_table_on_the_pooled_writer_shadows_nothing_of_the_append(
    tmp_path: Path,
) -> None:
    """SQLite looks unqualified names up in ``temp`` first: the driver statements say ``main``."""
    backend = SQLBackend(f"sqlite:///{tmp_path / 's.db'}", embedding_dimension=None)
    try:
        s = open_session(backend, ALICE)
        t = backend.tables
        with backend._writers[0].connect() as conn, conn.begin():  # the one writer connection
            for table in (t.sessions, t.counters, t.messages):
                conn.execute(
                    text(f"CREATE TEMP TABLE {table.name} AS SELECT * FROM main.{table.name}")
                )
        traced: list[str] = []
        with backend._writers[0].connect() as conn:
            conn.connection.driver_connection.set_trace_callback(traced.append)  # type: ignore[union-attr]
        try:
            await append(backend, "sync", s, "a")
        finally:
            with backend._writers[0].connect() as conn:
                conn.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
        assert seqs(backend, s) == [(1, "a")]
        with backend._writers[0].connect() as conn:
            for table in (t.sessions, t.counters, t.messages):
                planted = conn.execute(text(f"SELECT count(*) FROM temp.{table.name}")).scalar()
                assert planted == (1 if table is t.sessions else 0), table.name
        written = [q for q in traced if q.startswith(("UPDATE", "INSERT"))]
        assert len(written) == 3, traced
        for statement in written:
            for table in (t.sessions, t.counters, t.messages):
                bare = statement.replace(f"main.{table.name}", "")
                assert f" {table.name}" not in bare, statement
    finally:
        backend.close()


DIALECT = sqlite.dialect()
TIMES = [
    T0,
    datetime(2030, 1, 1, 12, 30, 5, 123456),  # naive: UTC
    datetime(2030, 1, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    None,
]
VALUES = [
    "",
    "plain",
    'quote " and \\ and \n',
    "é ✓ 🙂",
    {},
    [],
    {"a": [1, 2.5, None]},
    [{"t": "x"}],
    {"langchain": {"type": "human"}, "é": ["✓", {"k": 0.1, "n": -0.0, "big": 10**30}]},
    [True, False, None, 1e100, float("nan"), {1: "int key"}, ("a", "tuple")],
]


def test_the_driver_processors_write_what_sqlalchemys_write() -> None:
    """One text form per column whichever path wrote the row."""
    time = bind_processor(UTCDateTime(), DIALECT)
    assert time is not None
    assert [sqlite_time(t) for t in TIMES] == [time(t) for t in TIMES]
    data = bind_processor(JSON(), DIALECT)
    assert data is not None
    assert [json_text(v) for v in VALUES] == [data(v) for v in VALUES]
    assert [json_text(v) for v in VALUES] == [json.dumps(v) for v in VALUES]
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):  # json.dumps's own error
        json_text(loop)
