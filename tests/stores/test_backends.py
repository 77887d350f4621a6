"""The storage suite: every backend must pass it, unchanged."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from muxi_isolation import (
    Backend,
    InvalidFilter,
    InvalidIdentifier,
    InvalidInput,
    Memory,
    Message,
    MissingScope,
    ReservedKey,
    Scope,
    ScopeViolation,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    SessionRecord,
)
from muxi_isolation.filters import Compare, Not, Or
from muxi_isolation.records import ACTIVE, ARCHIVED

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")  # same user id, other tenant


def session(scope: Scope, sid: str, at: datetime = T0) -> SessionRecord:
    return SessionRecord(sid, scope.user(), at, at, at + timedelta(hours=1))


def open_session(backend: Backend, scope: Scope, sid: str = "s1") -> Scope:
    backend.insert_session(scope, session(scope, sid))
    return scope.with_session(sid)


def texts(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


# -- sessions ---------------------------------------------------------------------------


def test_session_round_trip_and_listing(backend: Backend) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1"))
    backend.insert_session(ALICE, session(ALICE, "s2", T0 + timedelta(seconds=1)))
    backend.insert_session(BOB, session(BOB, "s3"))
    got = backend.get_session(ALICE, "s1")
    assert got == session(ALICE, "s1")
    assert [s.id for s in backend.list_sessions(ALICE)] == ["s1", "s2"]
    assert [s.id for s in backend.list_sessions(BOB)] == ["s3"]
    assert backend.list_sessions(ALICE_B) == []


def test_another_users_session_is_missing(backend: Backend) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1"))
    for other in (BOB, ALICE_B):
        assert backend.get_session(other, "s1") is None
        assert not backend.touch_session(other, "s1", T0, T0 + timedelta(days=1))
        assert not backend.delete_session(other, "s1")
    assert backend.get_session(ALICE, "s1") == session(ALICE, "s1")


def test_same_session_id_for_two_users_stays_apart(backend: Backend) -> None:
    a = open_session(backend, ALICE, "shared")
    b = open_session(backend, BOB, "shared")
    backend.append_messages(a, [Message("user", "from alice")])
    backend.append_messages(b, [Message("user", "from bob")])
    assert texts(backend.get_messages(a)) == ["from alice"]
    assert texts(backend.get_messages(b)) == ["from bob"]


def test_duplicate_session_id_for_one_user_is_refused(backend: Backend) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1"))
    with pytest.raises(SessionExists):
        backend.insert_session(ALICE, session(ALICE, "s1"))


def test_session_record_for_another_user_is_refused(backend: Backend) -> None:
    with pytest.raises(ScopeViolation):
        backend.insert_session(ALICE, session(BOB, "s1"))
    assert backend.list_sessions(BOB) == []
    assert backend.list_sessions(ALICE) == []


def test_touch_moves_expiry(backend: Backend) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1"))
    later = T0 + timedelta(minutes=30)
    assert backend.touch_session(ALICE, "s1", later, later + timedelta(hours=1))
    got = backend.get_session(ALICE, "s1")
    assert got is not None
    assert (got.last_active_at, got.expires_at) == (later, later + timedelta(hours=1))


def test_delete_session_removes_its_messages_only(backend: Backend) -> None:
    s1, s2 = open_session(backend, ALICE, "s1"), open_session(backend, ALICE, "s2")
    backend.append_messages(s1, [Message("user", "one")])
    backend.append_messages(s2, [Message("user", "two")])
    backend.upsert_memories(s1, [Memory("m1", "kept")])
    assert backend.delete_session(ALICE, "s1")
    assert backend.get_session(ALICE, "s1") is None
    assert backend.get_messages(s1) == []
    assert texts(backend.get_messages(s2)) == ["two"]
    assert [m.id for m in backend.list_memories(ALICE)] == ["m1"]


def test_delete_session_removes_its_langgraph_thread(backend: Backend) -> None:
    from muxi_isolation.stores.graph import CheckpointQuery, CheckpointRecord

    open_session(backend, ALICE, "s1")
    open_session(backend, ALICE, "s2")
    for sid in ("s1", "s2"):
        backend.put_checkpoint(ALICE, CheckpointRecord(sid, "", "c1", None, "json", b"{}"))
    assert backend.delete_session(ALICE, "s1")
    threads = [c.thread_id for c in backend.get_checkpoints(ALICE, CheckpointQuery())]
    assert threads == ["s2"]


# -- messages ---------------------------------------------------------------------------


def test_append_to_session_is_all_or_nothing(backend: Backend) -> None:
    scope = open_session(backend, ALICE)  # expires at T0 + 1h
    later = T0 + timedelta(minutes=10)
    stored = backend.append_to_session(
        scope, [Message("user", "a")], now=later, expires_at=later + timedelta(hours=1)
    )
    assert texts(stored) == ["a"]
    record = backend.get_session(ALICE, "s1")
    assert record is not None and record.expires_at == later + timedelta(hours=1)
    too_late = T0 + timedelta(hours=3)
    with pytest.raises(SessionExpired):
        backend.append_to_session(scope, [Message("user", "b")], now=too_late, expires_at=too_late)
    assert backend.delete_session(ALICE, "s1")  # deleted while an agent was still thinking
    for gone in (scope, BOB.with_session("s1")):
        with pytest.raises(SessionNotFound):
            backend.append_to_session(gone, [Message("user", "c")], now=later, expires_at=later)
    assert backend.get_messages(scope) == []
    assert backend.list_sessions(ALICE) == []


def test_renew_session_only_while_active(backend: Backend) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1"))  # expires at T0 + 1h
    later = T0 + timedelta(minutes=30)
    renewed = backend.renew_session(ALICE, "s1", now=later, expires_at=later + timedelta(hours=1))
    assert renewed is not None
    assert (renewed.created_at, renewed.last_active_at) == (T0, later)
    assert backend.get_session(ALICE, "s1") == renewed
    assert backend.renew_session(BOB, "s1", now=later, expires_at=later) is None
    too_late = T0 + timedelta(hours=2)
    assert (
        backend.renew_session(ALICE, "s1", now=too_late, expires_at=too_late + timedelta(hours=1))
        is None
    )
    assert backend.get_session(ALICE, "s1") == renewed  # an expired session is not revived


async def test_aappend_to_session(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    stored = await backend.aappend_to_session(
        scope, [Message("user", "a")], now=T0, expires_at=T0 + timedelta(hours=2)
    )
    assert texts(stored) == ["a"]
    with pytest.raises(SessionNotFound):
        await backend.aappend_to_session(
            BOB.with_session("s1"), [Message("user", "x")], now=T0, expires_at=T0
        )


def test_empty_batches_still_need_a_scope(backend: Backend) -> None:
    with pytest.raises(MissingScope):
        backend.append_messages(None, [])  # type: ignore[arg-type]
    with pytest.raises(MissingScope):
        backend.replace_messages(ALICE, [])  # no session: never "every session"
    with pytest.raises(MissingScope):
        backend.upsert_memories(None, [])  # type: ignore[arg-type]


def test_messages_keep_order_and_content(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    blocks = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]
    sent = [
        Message("system", "be brief"),
        Message("user", blocks, {"name": "al", "nested": {"a": [1, 2.5, None]}}),
        Message("assistant", "", tool_calls=[{"id": "c1", "name": "f", "args": {"q": "é"}}]),
        Message("tool", "42", {"tool_call_id": "c1"}),
    ]
    stored = backend.append_messages(scope, sent)
    assert [m.seq for m in stored] == sorted({m.seq for m in stored})
    got = backend.get_messages(scope)
    assert [(m.role, m.content, m.metadata, m.tool_calls) for m in got] == [
        (m.role, m.content, m.metadata, m.tool_calls) for m in sent
    ]
    assert all(m.scope == scope and m.status == ACTIVE and m.created_at for m in got)
    assert backend.get_messages(scope) == got  # reading twice gives the same list


def test_seq_keeps_growing_across_appends(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    first = backend.append_messages(scope, [Message("user", "a"), Message("user", "b")])
    second = backend.append_messages(scope, [Message("user", "c")])
    seqs = [m.seq for m in first + second]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({}, ["m0", "m1", "m2", "m3", "m4"]),
        ({"last": 2}, ["m3", "m4"]),
        ({"last": 0}, []),
        ({"last": 9}, ["m0", "m1", "m2", "m3", "m4"]),
        ({"limit": 2}, ["m0", "m1"]),
        ({"offset": 3}, ["m3", "m4"]),
        ({"limit": 2, "offset": 1}, ["m1", "m2"]),
        ({"limit": 0}, []),
    ],
)
def test_message_windows(backend: Backend, window: dict[str, int], expected: list[str]) -> None:
    scope = open_session(backend, ALICE)
    backend.append_messages(scope, [Message("user", f"m{i}") for i in range(5)])
    assert texts(backend.get_messages(scope, **window)) == expected


@pytest.mark.parametrize("window", [{"last": 1, "limit": 1}, {"limit": -1}, {"offset": -2}])
def test_bad_windows_are_refused(backend: Backend, window: dict[str, int]) -> None:
    scope = open_session(backend, ALICE)
    with pytest.raises(ValueError):
        backend.get_messages(scope, **window)


def test_status_archive_and_delete_oldest(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    backend.append_messages(scope, [Message("user", f"m{i}") for i in range(5)])
    archived = backend.take_oldest(scope, 2, archive=True)
    assert texts(archived) == ["m0", "m1"]
    assert backend.count_messages(scope, status=ACTIVE) == 3
    assert texts(backend.get_messages(scope, status=ARCHIVED)) == ["m0", "m1"]
    deleted = backend.take_oldest(scope, 2, archive=False)
    assert texts(deleted) == ["m2", "m3"]  # the oldest *active* ones
    assert texts(backend.get_messages(scope)) == ["m0", "m1", "m4"]
    assert backend.delete_messages(scope, status=ARCHIVED) == 2
    assert texts(backend.get_messages(scope)) == ["m4"]
    assert backend.take_oldest(scope, 5, archive=False)[0].content == "m4"
    assert backend.count_messages(scope) == 0


def test_append_with_status(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    backend.append_messages(
        scope, [Message("user", "old", status=ARCHIVED), Message("user", "new")]
    )
    assert texts(backend.get_messages(scope, status=ACTIVE)) == ["new"]
    assert texts(backend.get_messages(scope, status=ARCHIVED)) == ["old"]
    assert backend.count_messages(scope) == 2


def test_delete_one_message_by_seq(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    stored = backend.append_messages(scope, [Message("user", "a"), Message("user", "b")])
    assert stored[0].seq is not None
    gone = backend.delete_message(scope, stored[0].seq)
    assert gone is not None and gone.content == "a"
    assert backend.delete_message(scope, stored[0].seq) is None
    assert texts(backend.get_messages(scope)) == ["b"]


def test_foreign_seq_deletes_nothing(backend: Backend) -> None:
    mine = open_session(backend, ALICE)
    theirs = open_session(backend, BOB)
    stored = backend.append_messages(theirs, [Message("user", "bob's")])
    assert stored[0].seq is not None
    assert backend.delete_message(mine, stored[0].seq) is None
    assert texts(backend.get_messages(theirs)) == ["bob's"]


def test_replace_messages(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    backend.append_messages(scope, [Message("user", "a"), Message("user", "b")])
    backend.replace_messages(scope, [Message("user", "c")])
    assert texts(backend.get_messages(scope)) == ["c"]
    assert backend.replace_messages(scope, []) == []
    assert backend.get_messages(scope) == []


def test_messages_isolated_by_session_user_and_tenant(backend: Backend) -> None:
    scopes = [
        open_session(backend, ALICE, "s1"),
        open_session(backend, ALICE, "s2"),
        open_session(backend, BOB, "s1"),
        open_session(backend, ALICE_B, "s1"),
    ]
    for i, scope in enumerate(scopes):
        backend.append_messages(scope, [Message("user", f"secret {i}")])
    for i, scope in enumerate(scopes):
        assert texts(backend.get_messages(scope)) == [f"secret {i}"]
        assert backend.count_messages(scope) == 1
    assert backend.delete_messages(scopes[0]) == 1
    assert [backend.count_messages(s) for s in scopes] == [0, 1, 1, 1]


def test_reserved_metadata_key_writes_nothing(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    with pytest.raises(ReservedKey):
        backend.append_messages(
            scope, [Message("user", "ok"), Message("user", "x", {"muxi_user_id": "bob"})]
        )
    assert backend.get_messages(scope) == []


def test_message_stamped_for_another_user_is_refused(backend: Backend) -> None:
    scope = open_session(backend, ALICE)
    with pytest.raises(ScopeViolation):
        backend.append_messages(scope, [Message("user", "x", scope=BOB.with_session("s1"))])
    assert backend.get_messages(scope) == []


# -- memories ---------------------------------------------------------------------------


def mem(id: str, content: str = "", vec: list[float] | None = None, **meta: object) -> Memory:
    return Memory(id, content or id, dict(meta), vec)


def test_memory_round_trip(backend: Backend) -> None:
    ids = backend.upsert_memories(
        ALICE.with_session("s1"),
        [mem("m1", "likes Python", [1.0, 0.0, 0.0], kind="preference", n=3)],
    )
    assert ids == ["m1"]
    [got] = backend.get_memories(ALICE, ["m1"])
    assert (got.id, got.content, got.metadata) == (
        "m1",
        "likes Python",
        {"kind": "preference", "n": 3},
    )
    assert got.embedding == pytest.approx([1.0, 0.0, 0.0])
    assert got.scope == ALICE.with_session("s1")  # records where it was made
    assert got.created_at is not None


def test_memories_are_per_user_not_per_session(backend: Backend) -> None:
    backend.upsert_memories(ALICE.with_session("s1"), [mem("m1")])
    assert [m.id for m in backend.list_memories(ALICE.with_session("s2"))] == ["m1"]
    assert backend.list_memories(BOB) == []
    assert backend.list_memories(ALICE_B) == []


def test_upsert_replaces_same_id(backend: Backend) -> None:
    backend.upsert_memories(ALICE, [mem("m1", "old")])
    backend.upsert_memories(ALICE, [mem("m1", "new", kind="x")])
    [got] = backend.list_memories(ALICE)
    assert (got.content, got.metadata) == ("new", {"kind": "x"})
    assert backend.count_memories(ALICE) == 1


def test_same_memory_id_for_two_users(backend: Backend) -> None:
    backend.upsert_memories(ALICE, [mem("m1", "alice's")])
    backend.upsert_memories(BOB, [mem("m1", "bob's")])
    assert [m.content for m in backend.get_memories(ALICE, ["m1"])] == ["alice's"]
    assert [m.content for m in backend.get_memories(BOB, ["m1"])] == ["bob's"]


def test_foreign_ids_are_missing_and_survive(backend: Backend) -> None:
    backend.upsert_memories(BOB, [mem("b1"), mem("b2")])
    backend.upsert_memories(ALICE, [mem("a1")])
    assert backend.get_memories(ALICE, ["b1", "b2"]) == []
    assert backend.delete_memories(ALICE, ids=["b1", "b2"]) == 0
    assert [m.id for m in backend.get_memories(ALICE, ["a1", "b1"])] == ["a1"]
    assert backend.count_memories(BOB) == 2


def test_list_order_window_and_count(backend: Backend) -> None:
    backend.upsert_memories(ALICE, [mem(f"m{i}", n=i) for i in range(5)])
    assert [m.id for m in backend.list_memories(ALICE)] == [f"m{i}" for i in range(5)]
    assert [m.id for m in backend.list_memories(ALICE, limit=2, offset=1)] == ["m1", "m2"]
    assert backend.count_memories(ALICE, filter={"n": {"$gte": 3}}) == 2


def test_delete_by_ids_filter_and_all(backend: Backend) -> None:
    backend.upsert_memories(ALICE, [mem(f"m{i}", n=i) for i in range(6)])
    backend.upsert_memories(BOB, [mem("b", n=1)])
    assert backend.delete_memories(ALICE, ids=["m0", "nope"]) == 1
    assert backend.delete_memories(ALICE, filter={"n": {"$lt": 3}}) == 2
    assert backend.delete_memories(ALICE, ids=["m3", "m4"], filter={"n": 4}) == 1
    assert [m.id for m in backend.list_memories(ALICE)] == ["m3", "m5"]
    assert backend.delete_memories(ALICE) == 2
    assert backend.count_memories(ALICE) == 0
    assert backend.count_memories(BOB) == 1


def test_search_ranks_by_cosine_and_fills_k(backend: Backend) -> None:
    backend.upsert_memories(
        ALICE,
        [
            mem("x", vec=[1.0, 0.0, 0.0]),
            mem("xy", vec=[1.0, 1.0, 0.0]),
            mem("y", vec=[0.0, 1.0, 0.0]),
            mem("none"),  # no embedding: never a search result
        ],
    )
    backend.upsert_memories(BOB, [mem("bx", vec=[1.0, 0.0, 0.0])])
    hits = backend.search_memories(ALICE, [1.0, 0.0, 0.0], k=10)
    assert [m.id for m, _ in hits] == ["x", "xy", "y"]
    assert [s for _, s in hits] == pytest.approx([1.0, 2**-0.5, 0.0], abs=1e-5)
    assert [m.id for m, _ in backend.search_memories(ALICE, [0.0, 1.0, 0.0], k=1)] == ["y"]
    assert backend.search_memories(ALICE, [1.0, 0.0, 0.0], k=0) == []
    assert backend.search_memories(ALICE_B, [1.0, 0.0, 0.0], k=5) == []


@pytest.mark.parametrize(
    ("query", "k", "match"),
    [
        ([1.0, 0.0, 0.0], 1, "dimensions"),
        ([], 1, "must not be empty"),
        (["north", "east"], 1, "sequence of numbers"),
        ([1.0, 0.0], -1, "k must be a non-negative integer"),
        ([1.0, 0.0], 1.5, "k must be a non-negative integer"),
    ],
)
def test_searches_that_cannot_be_answered_are_value_errors(
    backend: Backend, query: list[object], k: object, match: str
) -> None:
    backend.upsert_memories(ALICE, [mem("m", vec=[1.0, 0.0])])
    with pytest.raises(ValueError, match=match):
        backend.search_memories(ALICE, query, k=k)  # type: ignore[arg-type]
    assert [m.id for m, _ in backend.search_memories(ALICE, [1.0, 0.0], k=1)] == ["m"]


def test_requests_for_nothing_change_nothing(backend: Backend) -> None:
    s1 = open_session(backend, ALICE)
    assert backend.take_oldest(s1, 3, archive=True) == []  # an empty session
    backend.append_messages(s1, [Message("user", "kept")])
    assert backend.take_oldest(s1, 0, archive=False) == []
    backend.upsert_memories(ALICE, [mem("m")])
    assert backend.delete_memories(ALICE, ids=[]) == 0  # no ids: not "all of them"
    assert backend.count_memories(ALICE) == 1
    assert texts(backend.get_messages(s1)) == ["kept"]


def test_search_with_filter(backend: Backend) -> None:
    backend.upsert_memories(
        ALICE,
        [mem(f"m{i}", vec=[1.0, float(i), 0.0], kind="a" if i % 2 else "b") for i in range(6)],
    )
    hits = backend.search_memories(ALICE, [1.0, 0.0, 0.0], k=10, filter={"kind": "a"})
    assert [m.id for m, _ in hits] == ["m1", "m3", "m5"]


FILTER_CASES = [
    ({"color": "red"}, {"r1", "r2"}),
    ({"color": {"$ne": "red"}}, {"b", "g"}),
    ({"n": 1}, {"r1"}),
    ({"n": 1.0}, {"r1"}),
    ({"flag": True}, {"b"}),
    ({"flag": 1}, set()),
    ({"n": {"$gt": 1}}, {"r2", "b"}),
    ({"n": {"$gte": 1, "$lt": 3}}, {"r1", "r2"}),
    ({"n": {"$lte": 1}}, {"r1", "g"}),
    ({"name": {"$gt": "b"}}, {"r2", "g"}),
    ({"n": {"$gt": "a"}}, set()),
    ({"color": {"$in": ["red", "blue"]}}, {"r1", "r2", "b"}),
    ({"color": {"$nin": ["red"]}}, {"b", "g"}),
    ({"flag": {"$exists": True}}, {"b", "g"}),
    ({"flag": {"$exists": False}}, {"r1", "r2"}),
    ({"tags": {"$contains": "x"}}, {"r1", "b"}),
    ({"tags": {"$any": ["y", "z"]}}, {"r1", "r2"}),
    ({"tags": {"$all": ["x", "y"]}}, {"r1"}),
    ({"name": {"$text": "elp"}}, {"r2"}),
    ({"name": {"$text": "%"}}, {"g"}),
    ({"name": {"$text": "_"}}, set()),
    ({"$or": [{"color": "blue"}, {"n": 0}]}, {"b", "g"}),
    ({"$and": [{"color": "red"}, {"n": {"$gt": 1}}]}, {"r2"}),
    ({"$not": {"color": "red"}}, {"b", "g"}),
    ({"$not": {"flag": True}}, {"r1", "r2", "g"}),
    ({"nested": None}, {"g"}),
    ({"nested": {"$ne": None}}, set()),
    ({"missing": {"$ne": 1}}, set()),
    ({"$not": {"missing": 1}}, {"r1", "r2", "b", "g"}),
    ({"color": "red", "n": 2}, {"r2"}),
    ({"name": "o'brien\" OR 1=1 --"}, set()),
]


@pytest.mark.parametrize(("spec", "expected"), FILTER_CASES)
def test_filter_dialect(backend: Backend, spec: dict[str, object], expected: set[str]) -> None:
    backend.upsert_memories(
        ALICE,
        [
            mem("r1", n=1, color="red", tags=["x", "y"], name="alpha"),
            mem("r2", n=2, color="red", tags=["z"], name="delphi"),
            mem("b", n=3, color="blue", tags=["x"], flag=True, name="b"),
            mem("g", n=0, color="green", tags=[], flag=False, name="g 100%", nested=None),
        ],
    )
    backend.upsert_memories(BOB, [mem("r1b", n=1, color="red", tags=["x"], name="alpha")])
    assert {m.id for m in backend.list_memories(ALICE, filter=spec)} == expected
    assert backend.count_memories(ALICE, filter=spec) == len(expected)


@pytest.mark.parametrize(
    "spec",
    [
        {"user_id": "bob"},
        {"tenant_id": "tenant_b"},
        {"session_id": "s1"},
        {"muxi_user_id": "bob"},
        {"$or": [{"color": "red"}, {"muxi_tenant_id": "tenant_b"}]},
        {"$not": {"$not": {"user_id": {"$ne": "x"}}}},
    ],
)
def test_filters_naming_scope_keys_are_refused(backend: Backend, spec: dict[str, object]) -> None:
    backend.upsert_memories(BOB, [mem("b", color="red")])
    with pytest.raises(ReservedKey):
        backend.list_memories(ALICE, filter=spec)
    with pytest.raises(ReservedKey):
        backend.delete_memories(ALICE, filter=spec)
    with pytest.raises(ReservedKey):
        backend.search_memories(ALICE, [1.0], filter=spec)
    assert backend.count_memories(BOB) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object(), {1j}])
def test_what_json_cannot_hold_writes_nothing(backend: Backend, bad: object) -> None:
    scope = open_session(backend, ALICE)
    with pytest.raises(ValueError, match="must be JSON"):
        backend.upsert_memories(ALICE, [mem("ok"), Memory("bad", "x", {"v": bad})])
    with pytest.raises(ValueError, match="must be JSON"):
        backend.append_messages(scope, [Message("user", "ok"), Message("user", "x", {"v": bad})])
    with pytest.raises(ValueError, match="must be JSON"):
        backend.append_messages(scope, [Message("user", [{"v": bad}])])
    assert backend.count_memories(ALICE) == 0
    assert backend.get_messages(scope) == []


def test_reserved_key_in_memory_metadata_writes_nothing(backend: Backend) -> None:
    with pytest.raises(ReservedKey):
        backend.upsert_memories(ALICE, [mem("ok"), mem("bad", muxi_tenant_id="tenant_b")])
    assert backend.count_memories(ALICE) == 0


# -- maintenance ------------------------------------------------------------------------


def test_forget_user_removes_every_row_of_that_user_only(backend: Backend) -> None:
    for scope in (ALICE, BOB, ALICE_B):
        s = open_session(backend, scope)
        backend.append_messages(s, [Message("user", "hi"), Message("assistant", "hello")])
        backend.upsert_memories(s, [mem("m", vec=[1.0])])
    counts = backend.forget_user(ALICE)
    assert counts == {"sessions": 1, "messages": 2, "memories": 1}
    assert backend.list_sessions(ALICE) == []
    assert backend.get_messages(ALICE.with_session("s1")) == []
    assert backend.list_memories(ALICE) == []
    for scope in (BOB, ALICE_B):
        assert len(backend.get_messages(scope.with_session("s1"))) == 2
        assert backend.count_memories(scope) == 1


def stored(backend: Backend, scope: Scope) -> list[tuple[object, ...]]:
    return [(m.seq, m.role, m.content, m.status, m.created_at) for m in backend.get_messages(scope)]


def test_restore_messages_keeps_seq_status_and_time(backend: Backend) -> None:
    s = open_session(backend, ALICE)
    backend.append_messages(s, [Message("user", "to be replaced")])
    rows = [
        Message("user", "first", {"k": 1}, seq=3, created_at=T0),
        Message("assistant", "second", status=ARCHIVED, seq=7, created_at=T0),
    ]
    backend.restore_messages(s, list(reversed(rows)))  # any order: stored by seq
    assert stored(backend, s) == [
        (3, "user", "first", ACTIVE, T0),
        (7, "assistant", "second", ARCHIVED, T0),
    ]
    assert backend.get_messages(s)[0].metadata == {"k": 1}
    assert backend.append_messages(s, [Message("user", "next")])[0].seq == 8
    backend.restore_messages(s, [Message("user", "low", seq=1)])
    assert backend.append_messages(s, [Message("user", "after")])[0].seq == 9  # never reused
    backend.restore_messages(s, [])
    assert backend.get_messages(s) == []


@pytest.mark.parametrize("seqs", [[None], [0], [1, 1], [-2], [True]])
def test_restore_messages_refuses_bad_seqs(backend: Backend, seqs: list[object]) -> None:
    s = open_session(backend, ALICE)
    backend.append_messages(s, [Message("user", "kept")])
    with pytest.raises(ValueError):
        backend.restore_messages(s, [Message("user", "x", seq=q) for q in seqs])  # type: ignore[arg-type]
    assert texts(backend.get_messages(s)) == ["kept"]


def test_list_message_sessions_finds_sessions_without_records(backend: Backend) -> None:
    open_session(backend, ALICE, "with_record")
    backend.append_messages(ALICE.with_session("with_record"), [Message("user", "a")])
    backend.append_messages(ALICE.with_session("orphan"), [Message("user", "b")])
    backend.append_messages(BOB.with_session("bobs"), [Message("user", "c")])
    open_session(backend, ALICE, "empty")
    assert backend.list_message_sessions(ALICE) == ["orphan", "with_record"]
    backend.delete_messages(ALICE.with_session("orphan"))
    assert backend.list_message_sessions(ALICE.with_session("x")) == ["with_record"]
    assert backend.list_message_sessions(ALICE_B) == []


def fill_everyone(backend: Backend) -> None:
    for scope in (ALICE, BOB, ALICE_B):
        s = open_session(backend, scope)
        backend.append_messages(s, [Message("user", "hi"), Message("assistant", "hello")])
        backend.upsert_memories(s, [mem("m", vec=[1.0])])


def test_forget_tenant_removes_that_tenant_only(backend: Backend) -> None:
    fill_everyone(backend)
    assert backend.list_tenants() == ["tenant_a", "tenant_b"]
    assert backend.forget_tenant("tenant_a") == {"sessions": 2, "messages": 4, "memories": 2}
    assert backend.list_tenants() == ["tenant_b"]
    for scope in (ALICE, BOB):
        assert backend.list_sessions(scope) == [] and backend.list_memories(scope) == []
        assert backend.get_messages(scope.with_session("s1")) == []
    assert len(backend.get_messages(ALICE_B.with_session("s1"))) == 2
    assert backend.forget_tenant("tenant_a") == {"sessions": 0, "messages": 0, "memories": 0}
    with pytest.raises(InvalidIdentifier):
        backend.forget_tenant("bad:tenant")


def test_purge_expired_drops_expired_sessions_whole_and_keeps_memories(backend: Backend) -> None:
    hour = timedelta(hours=1)
    for scope in (ALICE, BOB, ALICE_B):
        for sid, at in (("old", T0 - 3 * hour), ("edge", T0 - hour), ("live", T0)):
            s = open_session(backend, scope, sid)  # expires at ``at`` + 1 hour
            backend.touch_session(scope, sid, at, at + hour)
            backend.append_messages(s, [Message("user", f"{sid} 1"), Message("user", f"{sid} 2")])
        backend.upsert_memories(scope.with_session("old"), [mem("fact", vec=[1.0])])
    counts = backend.purge_expired(T0, tenant_id="tenant_a")  # "edge" expires exactly at T0
    assert counts == {"sessions": 4, "messages": 8}
    for scope in (ALICE, BOB):
        assert [s.id for s in backend.list_sessions(scope)] == ["live"]
        assert backend.get_messages(scope.with_session("old")) == []
        assert backend.list_message_sessions(scope) == ["live"]
        assert [m.id for m in backend.list_memories(scope)] == ["fact"]
    assert len(backend.list_sessions(ALICE_B)) == 3  # another tenant: untouched
    assert backend.purge_expired(T0) == {"sessions": 2, "messages": 4}  # every tenant
    assert [s.id for s in backend.list_sessions(ALICE_B)] == ["live"]
    assert backend.count_memories(ALICE_B) == 1
    assert backend.purge_expired(T0) == {"sessions": 0, "messages": 0}
    assert backend.append_messages(ALICE.with_session("old"), [Message("user", "new")])[0].seq == 1
    with pytest.raises(ValueError):
        backend.purge_expired(datetime(2026, 1, 8))  # naive: refused


async def test_async_maintenance_twins(backend: Backend) -> None:
    s = open_session(backend, ALICE, "s0")
    await backend.arestore_messages(s, [Message("user", "r", seq=5, created_at=T0)])
    assert stored(backend, s) == [(5, "user", "r", ACTIVE, T0)]
    assert await backend.alist_message_sessions(ALICE) == ["s0"]
    fill_everyone(backend)
    assert await backend.alist_tenants() == ["tenant_a", "tenant_b"]
    later = T0 + timedelta(days=1)
    assert await backend.apurge_expired(later, tenant_id="tenant_b") == {
        "sessions": 1,
        "messages": 2,
    }
    assert await backend.aforget_tenant("tenant_a") == {
        "sessions": 3,
        "messages": 5,
        "memories": 2,
    }
    assert await backend.alist_tenants() == ["tenant_b"]


# -- fail closed ------------------------------------------------------------------------

NO_SCOPE_CALLS = [
    lambda b, s: b.insert_session(s, session(ALICE, "x")),
    lambda b, s: b.get_session(s, "x"),
    lambda b, s: b.list_sessions(s),
    lambda b, s: b.touch_session(s, "x", T0, T0),
    lambda b, s: b.delete_session(s, "x"),
    lambda b, s: b.append_messages(s, [Message("user", "x")]),
    lambda b, s: b.replace_messages(s, [Message("user", "x")]),
    lambda b, s: b.get_messages(s),
    lambda b, s: b.count_messages(s),
    lambda b, s: b.delete_messages(s),
    lambda b, s: b.delete_message(s, 1),
    lambda b, s: b.take_oldest(s, 1, archive=True),
    lambda b, s: b.upsert_memories(s, [mem("x")]),
    lambda b, s: b.get_memories(s, ["x"]),
    lambda b, s: b.list_memories(s),
    lambda b, s: b.count_memories(s),
    lambda b, s: b.delete_memories(s),
    lambda b, s: b.search_memories(s, [1.0]),
    lambda b, s: b.forget_user(s),
    lambda b, s: b.restore_messages(s, [Message("user", "x", seq=1)]),
    lambda b, s: b.list_message_sessions(s),
]


@pytest.mark.parametrize("call", NO_SCOPE_CALLS)
def test_no_scope_is_an_error(backend: Backend, call) -> None:
    backend.upsert_memories(ALICE, [mem("x")])
    for bad in (None, "tenant_a:alice", {"tenant_id": "tenant_a"}):
        with pytest.raises(MissingScope):
            call(backend, bad)
    assert backend.count_memories(ALICE) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.append_messages(ALICE, [Message("user", "x")]),
        lambda b: b.get_messages(ALICE),
        lambda b: b.count_messages(ALICE),
        lambda b: b.delete_messages(ALICE),
    ],
)
def test_messages_need_a_session(backend: Backend, call) -> None:
    with pytest.raises(MissingScope):
        call(backend)


# -- async twins ------------------------------------------------------------------------


async def test_async_twins_match_sync(backend: Backend) -> None:
    scope = ALICE.with_session("s1")
    await backend.ainsert_session(ALICE, session(ALICE, "s1"))
    assert (await backend.aget_session(ALICE, "s1")) == session(ALICE, "s1")
    assert await backend.aget_session(BOB, "s1") is None
    assert [s.id for s in await backend.alist_sessions(ALICE)] == ["s1"]
    later = T0 + timedelta(minutes=5)
    assert await backend.atouch_session(ALICE, "s1", later, later)
    stored = await backend.aappend_messages(scope, [Message("user", f"m{i}") for i in range(4)])
    assert await backend.aappend_messages(scope, []) == []
    assert texts(await backend.aget_messages(scope, last=2)) == ["m2", "m3"]
    assert await backend.acount_messages(scope) == 4
    assert texts(await backend.atake_oldest(scope, 1, archive=True)) == ["m0"]
    assert stored[1].seq is not None
    gone = await backend.adelete_message(scope, stored[1].seq)
    assert gone is not None and gone.content == "m1"
    assert await backend.adelete_messages(scope, status=ARCHIVED) == 1
    await backend.areplace_messages(scope, [Message("user", "z")])
    assert texts(await backend.aget_messages(scope)) == ["z"]

    assert await backend.aupsert_memories(
        scope, [mem("a", vec=[1.0, 0.0]), mem("b", vec=[0.0, 1.0])]
    ) == ["a", "b"]
    assert await backend.aupsert_memories(scope, []) == []
    assert [m.id for m in await backend.aget_memories(ALICE, ["a", "zz"])] == ["a"]
    assert await backend.aget_memories(ALICE, []) == []
    assert [m.id for m in await backend.alist_memories(ALICE, limit=1)] == ["a"]
    assert await backend.acount_memories(ALICE) == 2
    hits = await backend.asearch_memories(ALICE, [0.0, 1.0], k=1)
    assert [m.id for m, _ in hits] == ["b"]
    assert await backend.adelete_memories(ALICE, ids=["a"]) == 1
    assert await backend.aforget_user(ALICE) == {"sessions": 1, "messages": 1, "memories": 1}
    assert not await backend.adelete_session(ALICE, "s1")


async def test_async_tasks_each_see_their_own(backend: Backend) -> None:
    scopes = [Scope(f"t{i % 3}", f"u{i}", "s") for i in range(30)]
    for scope in scopes:
        await backend.ainsert_session(scope, session(scope, "s"))

    async def work(scope: Scope) -> list[str]:
        for j in range(3):
            await backend.aappend_messages(scope, [Message("user", f"{scope.user_id}-{j}")])
            await asyncio.sleep(0)
        return texts(await backend.aget_messages(scope))

    results = await asyncio.gather(*(work(s) for s in scopes))
    for scope, got in zip(scopes, results):
        assert got == [f"{scope.user_id}-{j}" for j in range(3)]


# -- input no backend can take: the same InvalidInput everywhere, nothing written ------------

HOUR = timedelta(hours=1)
S1 = ALICE.with_session("s1")
TOO_BIG = 2**63  # one past SQLite's and PostgreSQL's largest integer
NUL, SURROGATE = "a\x00b", "a\ud800b"

# (method, scope, args, kwargs, error, field): each runs as the sync method and its a-twin.
BAD_INPUTS: list[tuple[str, Scope, tuple[object, ...], dict[str, object], type, str]] = [
    ("get_messages", S1, (), {"limit": TOO_BIG}, InvalidInput, "limit"),
    ("get_messages", S1, (), {"offset": 2**64}, InvalidInput, "offset"),
    ("get_messages", S1, (), {"last": TOO_BIG}, InvalidInput, "last"),
    ("get_messages", S1, (), {"limit": True}, InvalidInput, "limit"),
    ("get_messages", S1, (), {"status": NUL}, InvalidInput, "status"),
    ("count_messages", S1, (), {"status": SURROGATE}, InvalidInput, "status"),
    ("delete_messages", S1, (), {"status": NUL}, InvalidInput, "status"),
    ("delete_message", S1, (2**64,), {}, InvalidInput, "seq"),
    ("take_oldest", S1, (TOO_BIG,), {"archive": False}, InvalidInput, "n"),
    ("list_memories", ALICE, (), {"limit": TOO_BIG}, InvalidInput, "limit"),
    ("list_memories", ALICE, (), {"offset": 2**64}, InvalidInput, "offset"),
    ("list_memories", ALICE, (), {"filter": {"n": 2**64}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {"n": {"$in": [1, TOO_BIG]}}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {"n": {"$gt": TOO_BIG}}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {"n": {"$lt": -(2**63) - 1}}}, InvalidFilter, "filter"),
    ("count_memories", ALICE, (), {"filter": {"n": {"$nin": [TOO_BIG]}}}, InvalidFilter, "filter"),
    ("delete_memories", ALICE, (), {"filter": {"n": TOO_BIG}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {"s": NUL}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {"s": {"$text": SURROGATE}}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": {SURROGATE: 1}}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": Compare("n", "$eq", TOO_BIG)}, InvalidFilter, "filter"),
    ("list_memories", ALICE, (), {"filter": Compare("n", "$regex", "x")}, InvalidFilter, "filter"),
    (
        "list_memories",
        ALICE,
        (),
        {"filter": Or((Compare("n", "$eq", 1), Not(Compare("n", "$gt", TOO_BIG))))},
        InvalidFilter,
        "filter",
    ),
    ("search_memories", ALICE, ([1.0, 0.0],), {"filter": {"n": TOO_BIG}}, InvalidFilter, "filter"),
    ("search_memories", ALICE, ([1.0, 0.0],), {"k": TOO_BIG}, InvalidInput, "k"),
    ("search_memories", ALICE, ([float("nan"), 1.0],), {}, InvalidInput, "embedding"),
    ("get_memories", ALICE, ([NUL],), {}, InvalidInput, "ids"),
    ("get_memories", ALICE, ([SURROGATE],), {}, InvalidInput, "ids"),
    ("get_memories", ALICE, ("m",), {}, InvalidInput, "ids"),
    ("delete_memories", ALICE, (), {"ids": [NUL]}, InvalidInput, "ids"),
    (
        "append_messages",
        S1,
        ([Message("user", "ok"), Message("user", NUL)],),
        {},
        InvalidInput,
        "message content",
    ),
    ("append_messages", S1, ([Message("user", SURROGATE)],), {}, InvalidInput, "message content"),
    (
        "append_messages",
        S1,
        ([Message("user", "ok", {"k": [NUL]})],),
        {},
        InvalidInput,
        "message content",
    ),
    (
        "append_messages",
        S1,
        ([Message("user", "ok", {SURROGATE: 1})],),
        {},
        InvalidInput,
        "message content",
    ),
    (
        "append_messages",
        S1,
        ([Message("user", "ok", tool_calls=[{"name": NUL}])],),
        {},
        InvalidInput,
        "message content",
    ),
    ("append_messages", S1, ([Message(NUL, "ok")],), {}, InvalidInput, "role"),
    (
        "append_messages",
        S1,
        ([Message("user", "ok", status=SURROGATE)],),
        {},
        InvalidInput,
        "status",
    ),
    ("replace_messages", S1, ([Message("user", NUL)],), {}, InvalidInput, "message content"),
    (
        "append_to_session",
        S1,
        ([Message("user", SURROGATE)],),
        {"now": T0, "expires_at": T0 + HOUR},
        InvalidInput,
        "message content",
    ),
    ("restore_messages", S1, ([Message("user", "x", seq=TOO_BIG)],), {}, InvalidInput, "seq"),
    (
        "upsert_memories",
        ALICE,
        ([Memory("ok", "x"), Memory(NUL, "x")],),
        {},
        InvalidInput,
        "memory id",
    ),
    ("upsert_memories", ALICE, ([Memory("m2", SURROGATE)],), {}, InvalidInput, "memory content"),
    (
        "upsert_memories",
        ALICE,
        ([Memory("m2", "x", {"k": NUL})],),
        {},
        InvalidInput,
        "memory metadata",
    ),
    (
        "upsert_memories",
        ALICE,
        ([Memory("m2", "x", embedding=[float("inf")])],),
        {},
        InvalidInput,
        "embedding",
    ),
    ("get_session", ALICE, (NUL,), {}, InvalidIdentifier, "session_id"),
    ("delete_session", ALICE, (SURROGATE,), {}, InvalidIdentifier, "session_id"),
    (
        "renew_session",
        ALICE,
        (NUL,),
        {"now": T0, "expires_at": T0 + HOUR},
        InvalidIdentifier,
        "session_id",
    ),
    ("insert_session", ALICE, (session(ALICE, NUL),), {}, InvalidIdentifier, "session_id"),
]


def everything(backend: Backend) -> tuple[object, ...]:
    return (
        [(m.seq, m.role, m.content, m.metadata) for m in backend.get_messages(S1)],
        [(m.id, m.content, m.metadata) for m in backend.list_memories(ALICE)],
        [s.id for s in backend.list_sessions(ALICE)],
    )


@pytest.mark.parametrize(
    ("method", "scope", "args", "kwargs", "error", "field"),
    BAD_INPUTS,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_INPUTS)],
)
async def test_input_no_backend_can_take_is_refused_alike_by_both_halves(
    backend: Backend,
    method: str,
    scope: Scope,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type,
    field: str,
) -> None:
    open_session(backend, ALICE)
    backend.append_messages(S1, [Message("user", "kept", {"n": 1})])
    backend.upsert_memories(ALICE, [mem("m", "kept", vec=[1.0, 0.0], n=1)])
    before = everything(backend)
    with pytest.raises(error) as sync_error:
        getattr(backend, method)(scope, *args, **kwargs)
    with pytest.raises(error) as async_error:
        await getattr(backend, "a" + method)(scope, *args, **kwargs)
    for caught in (sync_error.value, async_error.value):
        assert isinstance(caught, InvalidInput) and isinstance(caught, ValueError)
        assert caught.field == field, caught
    assert str(sync_error.value) == str(async_error.value)
    assert everything(backend) == before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"n": 2**63 - 1}, {"max"}),
        ({"n": {"$gt": 2**62}}, {"max"}),
        ({"n": {"$lt": -(2**62)}}, {"min"}),
        ({"n": {"$in": [-(2**63), 5]}}, {"min", "five"}),
        ({"n": {"$nin": [2**63 - 1]}}, {"min", "five"}),
    ],
)
def test_the_64_bit_edges_read_alike_everywhere(
    backend: Backend, spec: dict[str, object], expected: set[str]
) -> None:
    backend.upsert_memories(
        ALICE, [mem("max", n=2**63 - 1), mem("min", n=-(2**63)), mem("five", n=5)]
    )
    assert {m.id for m in backend.list_memories(ALICE, filter=spec)} == expected
    assert backend.list_memories(ALICE, limit=2**63 - 1, offset=2**63 - 1) == []


@pytest.mark.parametrize(
    "spec",
    [{}, {"$not": {"n": {"$in": []}}}, {"$or": [{"n": 1}, {"$not": {"n": 1}}]}],
    ids=["empty", "not-nothing", "x-or-not-x"],
)
def test_a_delete_filter_that_matches_everything_is_refused_by_both_halves(
    backend: Backend, spec: dict[str, object]
) -> None:
    backend.upsert_memories(ALICE, [mem("a", n=1), mem("b", n=2)])
    with pytest.raises(InvalidFilter, match="must select something"):
        backend.delete_memories(ALICE, filter=spec)
    with pytest.raises(InvalidFilter, match="must select something"):
        asyncio.run(backend.adelete_memories(ALICE, filter=spec))
    assert backend.count_memories(ALICE) == 2
    assert backend.delete_memories(ALICE, filter={"n": 1}) == 1  # a real filter still works
