"""Graph-storage decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/stores/graph.py`` that tests/stores/test_graph*.py let
through, mostly in the async half: every storage test here runs both halves on every
backend, with Bob holding the same ids as Alice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from muxi_isolation import Backend, InvalidInput, MissingScope, Scope
from muxi_isolation.filters import parse_filter
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    MatchRule,
    StoreItem,
    WriteRecord,
    encode_namespace,
    namespace_matches,
)

NOW = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def call(backend: Backend, half: str, name: str, *args: Any, **kw: Any) -> Any:
    if half == "sync":
        return getattr(backend, name)(*args, **kw)
    return await getattr(backend, "a" + name)(*args, **kw)


def note(key: str, value: int, **more: Any) -> StoreItem:
    return StoreItem(("notes", "x"), key, {"v": value}, NOW, NOW, **more)


def checkpoint(thread: str, cid: str, **more: Any) -> CheckpointRecord:
    return CheckpointRecord(thread, "", cid, None, "bytes", b"x", {"run": cid}, **more)


def write(thread: str, cid: str, value: bytes) -> WriteRecord:
    return WriteRecord(thread, "", cid, "task", 0, "ch", "bytes", value)


# -- store items --------------------------------------------------------------------------


async def test_items_are_written_read_and_filtered_per_user(backend: Backend, half: str) -> None:
    backend.put_items(BOB, [note("k1", 9), note("k2", 9)], [])
    await call(backend, half, "put_items", ALICE, [note("k1", 1), note("k2", 2)], [])
    refs = [(("notes", "x"), "k1"), (("notes", "x"), "k2")]
    got = await call(backend, half, "get_items", ALICE, refs, now=NOW)
    assert sorted((i.key, i.value["v"], i.scope) for i in got) == [
        ("k1", 1, ALICE),
        ("k2", 2, ALICE),
    ]
    assert await call(backend, half, "get_items", ALICE, [], now=NOW) == []
    with pytest.raises(MissingScope):
        await call(backend, half, "get_items", None, refs, now=NOW)
    query = ItemQuery(filter=parse_filter({"v": 2}))
    found = await call(backend, half, "search_items", ALICE, query, now=NOW)
    assert [(i.key, i.scope) for i in found] == [("k2", ALICE)]
    await call(backend, half, "put_items", ALICE, [], [(("notes", "x"), "k1")])  # deletes only
    assert [i.key for i in backend.get_items(ALICE, refs, now=NOW)] == ["k2"]
    assert len(backend.get_items(BOB, refs, now=NOW)) == 2


async def test_refresh_pushes_the_callers_items_with_a_ttl_only(
    backend: Backend, half: str
) -> None:
    lapse = NOW + timedelta(minutes=1)
    for user in (ALICE, BOB):
        backend.put_items(user, [note("k", 1, ttl=1.0, expires_at=lapse)], [])
    later = NOW + timedelta(minutes=10)
    items = [note("k", 1, ttl=1.0, expires_at=lapse)]
    await call(backend, half, "refresh_items", ALICE, items, now=later)
    ref = [(("notes", "x"), "k")]
    mine = backend.get_items(ALICE, ref, now=later)
    assert [i.expires_at for i in mine] == [later + timedelta(minutes=1)]
    assert backend.get_items(BOB, ref, now=later) == []  # Bob's lapsed, not pushed
    with pytest.raises(MissingScope):
        await call(backend, half, "refresh_items", None, items, now=later)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (StoreItem(("notes",), "", {}), "key"),
        (StoreItem(("notes",), "a\x00b", {}), "key"),  # NUL: no database stores it
        (StoreItem(("notes", "\ud800"), "k", {}), "namespace"),  # a lone surrogate
        (StoreItem((), "k", {}), "namespace"),
        (StoreItem(("notes",), "k", []), "value"),  # type: ignore[arg-type]
        (StoreItem(("notes",), "k", {}, embeddings={"a": [1.0], "b": [1.0, 2.0]}), "embeddings"),
    ],
)
async def test_a_bad_item_names_its_field(
    backend: Backend, half: str, bad: StoreItem, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await call(backend, half, "put_items", ALICE, [bad], [])
    assert caught.value.field == field
    assert backend.search_items(ALICE, ItemQuery(), now=NOW) == []


async def test_namespace_rules_match_the_callers_namespaces(backend: Backend, half: str) -> None:
    items = [StoreItem(ns, "k", {}, NOW, NOW) for ns in [("a", "b"), ("b", "a"), ("c",)]]
    backend.put_items(ALICE, items, [])
    backend.put_items(BOB, [StoreItem(("a", "z"), "k", {}, NOW, NOW)], [])
    rules = [MatchRule("prefix", ("a",))]
    assert await call(backend, half, "list_namespaces", ALICE, rules, now=NOW) == [("a", "b")]
    everything = [MatchRule("prefix", ())]  # an empty path matches every namespace
    listed = await call(backend, half, "list_namespaces", ALICE, everything, now=NOW)
    assert listed == [("a", "b"), ("b", "a"), ("c",)]
    with pytest.raises(InvalidInput) as caught:
        await call(backend, half, "list_namespaces", ALICE, [MatchRule("infix", ())], now=NOW)  # type: ignore[arg-type]
    assert caught.value.field == "match"


@pytest.mark.parametrize(
    ("namespace", "kind", "path", "expected"),
    [
        (("a", "b", "c"), "prefix", ("a", "b"), True),
        (("a", "b", "c"), "prefix", ("b", "c"), False),
        (("a", "b", "c"), "suffix", ("b", "c"), True),
        (("a", "b", "c"), "suffix", ("a", "b"), False),
        (("a", "b", "c"), "suffix", ("*", "c"), True),
        (("a",), "prefix", ("a", "b"), False),  # a rule longer than the namespace
        (("a",), "suffix", ("a", "b"), False),
    ],
)
def test_namespace_matches(
    namespace: tuple[str, ...], kind: Any, path: tuple[str, ...], expected: bool
) -> None:
    assert namespace_matches(namespace, MatchRule(kind, path)) is expected


def test_a_namespace_is_stored_as_compact_utf8_json() -> None:
    assert encode_namespace(("a", "\u00e9")) == '["a","\u00e9"]'


# -- checkpoints --------------------------------------------------------------------------


async def test_checkpoints_are_stamped_for_the_caller(backend: Backend, half: str) -> None:
    theirs = (write("t1", "c1", b"bob"),)
    # writes attached to a record are not the record's: only put_checkpoint_writes stores them
    await call(backend, half, "put_checkpoint", ALICE, checkpoint("t1", "c1", writes=theirs))
    await call(backend, half, "put_checkpoint", ALICE, checkpoint("t2", "c1"))
    backend.put_checkpoint(BOB, checkpoint("t1", "c1"))
    for value in (b"first", b"second"):  # replace=True: the task's write is replaced
        await call(
            backend, half, "put_checkpoint_writes", ALICE, [write("t1", "c1", value)], replace=True
        )
    got = await call(backend, half, "get_checkpoints", ALICE, CheckpointQuery("t1"))
    assert [(r.thread_id, r.scope) for r in got] == [("t1", ALICE)]
    assert [w.value for w in got[0].writes] == [b"second"]
    assert all(w.scope == ALICE for w in got[0].writes)


@pytest.mark.parametrize(
    "name", ["put_checkpoint", "put_checkpoint_writes", "delete_thread", "copy_thread"]
)
async def test_a_bad_thread_id_is_refused_and_named(backend: Backend, half: str, name: str) -> None:
    args: dict[str, tuple[Any, ...]] = {
        "put_checkpoint": (checkpoint(" t1", "c1"),),
        "put_checkpoint_writes": ([write(" t1", "c1", b"x")],),
        "delete_thread": (" t1",),
        "copy_thread": ("t1", " t1"),
    }
    kw = {"replace": True} if name == "put_checkpoint_writes" else {}
    with pytest.raises(InvalidInput) as caught:
        await call(backend, half, name, ALICE, *args[name], **kw)
    assert caught.value.field == "thread_id"
    assert backend.get_checkpoints(ALICE, CheckpointQuery()) == []


async def test_thread_calls_act_on_the_callers_thread(backend: Backend, half: str) -> None:
    for user in (ALICE, BOB):
        for thread in ("t1", "t2"):
            backend.put_checkpoint(user, checkpoint(thread, "c1"))
            backend.put_checkpoint(user, checkpoint(thread, "c2"))
    assert await call(backend, half, "copy_thread", ALICE, "t1", "t1") == 0  # onto itself
    assert await call(backend, half, "prune_threads", ALICE, [], keep_latest=False) == 0
    kept = parse_filter({"run": "c2"})  # t2's newest matches: t2 is kept whole
    pruned = await call(
        backend, half, "prune_threads", ALICE, ["t1", "t2"], keep_latest=True, whole_if=kept
    )
    assert pruned == 0
    assert await call(backend, half, "delete_thread", ALICE, "t1") == 2
    left = backend.get_checkpoints(ALICE, CheckpointQuery())
    assert sorted((r.thread_id, r.checkpoint_id) for r in left) == [("t2", "c1"), ("t2", "c2")]
    assert len(backend.get_checkpoints(BOB, CheckpointQuery())) == 4
    with pytest.raises(MissingScope):
        await call(backend, half, "delete_thread", None, "t2")


@pytest.mark.parametrize(
    ("query", "field"),
    [(CheckpointQuery("t1", limit=1), "limit"), (CheckpointQuery(), "query")],
)
async def test_a_bad_delete_names_its_field(
    backend: Backend, half: str, query: CheckpointQuery, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await call(backend, half, "delete_checkpoints", ALICE, query)
    assert caught.value.field == field


async def test_bad_windows_and_thread_lists_name_their_field(backend: Backend, half: str) -> None:
    for query, field in ((ItemQuery(limit=-1), "limit"), (ItemQuery(offset=-1), "offset")):
        with pytest.raises(InvalidInput) as caught:
            await call(backend, half, "search_items", ALICE, query, now=NOW)
        assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        await call(backend, half, "prune_threads", ALICE, "t1", keep_latest=False)
    assert caught.value.field == "thread_ids"
