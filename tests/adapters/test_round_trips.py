"""Round trips per scoped call, pinned: a search, a history read and a history append.

PostgreSQL: every exchange with the server is counted by libpq's own trace (one
``ReadyForQuery`` ends each one), so BEGIN, ``scope_enter``, COMMIT and the reset of a pooled
connection count too. SQLite: every statement SQLite runs, by its own trace (BEGIN, COMMIT and
ROLLBACK included; SQLite's exact search reads the user's version, their rows kept).
Both halves, sync and async, must cost the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from _watch import postgres_round_trips, round_trips, sqlite_trace
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import text

from muxi_isolation import Memory, Message, Scope
from muxi_isolation.adapters.langchain import MuxiChatMessageHistory
from muxi_isolation.adapters.langchain._messages import to_record
from muxi_isolation.quotas import Limits
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope("tenant_a", "alice")
PAIR = [HumanMessage("what did I say?"), AIMessage("That the budget is 1.2M.")]

# (PostgreSQL round trips, SQLite statements) per call. A pooled PostgreSQL connection that
# ran only the backend's own statements goes back to the pool without a reset.
PINNED = {
    # PostgreSQL: BEGIN, scope_enter, the search (the user's row count inside) and COMMIT
    # in one flight (``_pipeline``); SQLite: BEGIN, the user's version (their rows are kept
    # while it holds), COMMIT
    "search": (1, 3),
    "read": (1, 3),  # BEGIN, scope_enter, the read, COMMIT: in one flight on PostgreSQL
    # PostgreSQL: BEGIN, scope_enter, touch + seqs + insert (one statement), COMMIT in one
    # flight (``_pg_append``); SQLite: BEGIN, touch, seqs, the insert's two rows (one
    # executemany), COMMIT
    "append": (1, 6),
    # refused (PostgreSQL: one flight, which says the session does not exist; SQLite:
    # BEGIN, touch, session?, ROLLBACK), then create + append on the usual path
    "first append": (7, 11),
}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, make_backend: Any) -> Iterator[SQLBackend]:
    # A fixed dimension: PostgreSQL builds the HNSW index, so a search plans per user.
    backend = make_backend(request.param, embedding_dimension=2, pool_size=1, max_overflow=0)
    backend.upsert_memories(ALICE, [Memory(f"m{i}", "x", {}, [1.0, i]) for i in range(20)])
    return backend


def _count(store: SQLBackend) -> Any:
    """PostgreSQL: libpq's trace per checkout; SQLite: the statements it runs."""
    return postgres_round_trips(store) if store.dialect == "postgresql" else sqlite_trace(store)


def _trips(store: SQLBackend, traces: list[str]) -> list[int]:
    """Per checkout, the server's ``ReadyForQuery`` messages (PostgreSQL); SQLite: one a
    statement."""
    if store.dialect != "postgresql":
        return [1 for _ in traces]
    return round_trips(traces)


def _calls(store: SQLBackend) -> dict[str, tuple[Callable[[], Any], Callable[[], Awaitable[Any]]]]:
    sessions = SessionManager(store)
    old = MuxiChatMessageHistory(store, ALICE.with_session(sessions.create(ALICE).id), sessions)
    old.add_messages(PAIR)
    new = iter(range(1000))

    def fresh() -> MuxiChatMessageHistory:
        return MuxiChatMessageHistory(store, ALICE.with_session(f"s{next(new)}"), sessions)

    async def afirst() -> None:
        await fresh().aadd_messages(PAIR)

    return {
        "search": (
            lambda: store.search_memories(ALICE, [1.0, 0.5], k=4),
            lambda: store.asearch_memories(ALICE, [1.0, 0.5], k=4),
        ),
        "read": (lambda: old.messages, old.aget_messages),
        "append": (lambda: old.add_messages(PAIR), lambda: old.aadd_messages(PAIR)),
        "first append": (lambda: fresh().add_messages(PAIR), afirst),
    }


@pytest.mark.parametrize("call", list(PINNED))
async def test_round_trips_per_scoped_call_are_pinned(store: SQLBackend, call: str) -> None:
    sync, async_ = _calls(store)[call]
    sync(), await async_()  # warm: schema, dimension, pools
    pinned = PINNED[call][0 if store.dialect == "postgresql" else 1]
    with _count(store) as counted:
        result = sync()
    with _count(store) as acounted:
        await async_()
    trips, atrips = _trips(store, counted), _trips(store, acounted)
    assert (sum(trips), sum(atrips)) == (pinned, pinned), (trips, atrips)
    if call == "search":
        assert len(result) == 4


LEFT = text(
    "SELECT (SELECT count(*) FROM pg_settings WHERE source = 'session'), "
    "(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'), "
    "(SELECT count(*) FROM pg_prepared_statements), "
    "coalesce(current_setting('muxi.user_id', true), ''), current_setting('enable_sort')"
)


async def test_the_backends_own_calls_leave_nothing_for_a_reset(make_backend: Any) -> None:
    """Why the backend's calls skip ``DISCARD ALL``: on a pool of one connection, a session,
    appends, quota-checked writes (advisory locks), an HNSW search (its planner settings),
    keyword search, reads and a forget, on both halves, leave no setting, lock or prepared
    statement on the session; and no reset was sent."""
    store = make_backend(
        "postgres",
        embedding_dimension=2,
        ann_threshold=5,
        ann_index_delay=0,
        pool_size=1,
        max_overflow=0,
    )
    store.limits = Limits(max_sessions_per_user=100, max_memories_per_user=100)
    store.setup()  # its probe of the app role is not a call: that connection is reset
    sessions = SessionManager(store)

    async def calls() -> None:
        store.upsert_memories(ALICE, [Memory(f"m{i}", f"word {i}", {}, [1.0, i]) for i in range(9)])
        await store.aupsert_memories(ALICE, [Memory("a", "word", {}, [0.5, 1.0])])
        assert store.search_plan(ALICE) == "hnsw"
        assert len(store.search_memories(ALICE, [1.0, 0.5], k=3)) == 3
        # her index now known: one flight on it, its settings made in the flight (both halves)
        assert len(store.search_memories(ALICE, [1.0, 0.5], k=3)) == 3
        assert len(await store.asearch_memories(ALICE, [1.0, 0.5], k=3)) == 3
        assert (
            len(await store.asearch_memories(ALICE, [1.0, 0.5], k=3, text="word", mode="hybrid"))
            == 3
        )
        scope = ALICE.with_session(sessions.create(ALICE).id)
        sessions.append(scope, [to_record(m) for m in PAIR])
        await sessions.aappend(scope, [to_record(m) for m in PAIR])
        assert len(await store.aget_messages(scope)) == 4
        store.forget_user(Scope("tenant_a", "bob"))

    with postgres_round_trips(store) as traces:
        await calls()
    assert len(traces) > 10 and not [t for t in traces if "DISCARD" in t]
    with store._engine.connect() as conn:  # the one pooled connection, as the calls left it
        db = conn.connection.driver_connection
        assert (db.autocommit, db.info.transaction_status.name) == (False, "IDLE")
        left = conn.execute(LEFT).one()
    async with store._aengine.connect() as aconn:
        adb = (await aconn.get_raw_connection()).driver_connection
        assert (adb.autocommit, adb.info.transaction_status.name) == (False, "IDLE")
        aleft = (await aconn.execute(LEFT)).one()
    assert tuple(left) == tuple(aleft) == (0, 0, 0, "", "on")


CONTENTS = [
    "{}",
    "[]",
    '"quoted"',
    "back\\slash",
    "new\nline\ttab",
    "é ü 漢字 🙂",
    "",
    '{"a": 1}',
    [{"type": "text", "text": "a block"}],
]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_history_read_gives_back_exactly_what_was_written(
    make_backend: Any, kind: str
) -> None:
    """The read path decodes its JSON columns itself (``Ops._read``): every kind of content,
    metadata and tool calls comes back as written, whole, as the last N, on both halves."""
    store = make_backend(kind)
    scope = ALICE.with_session(SessionManager(store).create(ALICE).id)
    written = [
        Message("user", c, {"n": i, "q": 'say "hi"\\'} if i % 2 else {}, [], "active")
        for i, c in enumerate(CONTENTS)
    ]
    written.append(Message("assistant", "x", {}, [{"id": "c1", "name": "f", "args": {"a": [1]}}]))
    store.append_messages(scope, written)
    expected = [(m.role, m.content, m.metadata, m.tool_calls) for m in written]
    for read in (
        store.get_messages(scope),
        await store.aget_messages(scope, status="active"),
        store.get_messages(scope, last=len(written)),
        await store.aget_messages(scope, last=3),
    ):
        got = [(m.role, m.content, m.metadata, m.tool_calls) for m in read]
        assert got == expected[-len(got) :] and len(got) in (3, len(written))
