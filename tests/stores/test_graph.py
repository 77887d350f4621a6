"""The graph storage protocol itself, below the LangGraph adapters, on every backend: what it
refuses before anything is written, how it ranks, and calls with nothing to do."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from muxi_isolation import (
    Backend,
    InvalidInput,
    MissingScope,
    Scope,
    ScopeViolation,
    StorageError,
)
from muxi_isolation.filters import parse_filter
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    MatchRule,
    StoreItem,
    WriteRecord,
    decode_namespace,
    encode_namespace,
    rank_items,
)

NOW = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")


def item(key: str, value: object, **more: object) -> StoreItem:
    return StoreItem(("notes",), key, value, NOW, NOW, **more)  # type: ignore[arg-type]


def keys(backend: Backend, user: Scope) -> list[str]:
    return sorted(i.key for i in backend.search_items(user, ItemQuery(), now=NOW))


BAD_ITEMS = [
    pytest.param(item("bad", ["a", "list"]), "must be a dict", id="value-not-a-dict"),
    pytest.param(item("bad", {"x": float("nan")}), "must be JSON", id="nan"),
    pytest.param(item("bad", {"x": {1, 2}}), "must be JSON", id="not-serializable"),
    pytest.param(
        item("bad", {"x": 1}, embeddings={"title": [1.0, 0.0], "body": [1.0, 0.0, 0.0]}),
        "same dimension",
        id="embeddings-of-two-dimensions",
    ),
]


@pytest.mark.parametrize(("bad", "match"), BAD_ITEMS)
async def test_a_bad_item_is_refused_and_its_batch_writes_nothing(
    backend: Backend, bad: StoreItem, match: str
) -> None:
    good = item("good", {"n": 1})
    with pytest.raises(InvalidInput, match=match):
        backend.put_items(ALICE, [good, bad], [])
    with pytest.raises(InvalidInput, match=match):
        await backend.aput_items(ALICE, [good, bad], [])
    assert keys(backend, ALICE) == []


async def test_a_record_stamped_for_another_user_is_refused(backend: Backend) -> None:
    theirs = item("k", {"v": 1}, scope=BOB)
    with pytest.raises(ScopeViolation, match="another user"):
        backend.put_items(ALICE, [theirs], [])
    checkpoint = CheckpointRecord("t1", "", "c1", None, "bytes", b"x", scope=BOB)
    with pytest.raises(ScopeViolation):
        backend.put_checkpoint(ALICE, checkpoint)
    write = WriteRecord("t1", "", "c1", "task", 0, "ch", "bytes", b"w", scope=BOB)
    with pytest.raises(ScopeViolation):
        await backend.aput_checkpoint_writes(ALICE, [write], replace=True)
    for user in (ALICE, BOB):
        assert keys(backend, user) == []
        assert backend.get_checkpoints(user, CheckpointQuery()) == []
    # stamped for the same user (any of her sessions): written as hers
    backend.put_items(ALICE, [replace(theirs, scope=ALICE.with_session("s9"))], [])
    assert [(i.key, i.scope) for i in backend.search_items(ALICE, ItemQuery(), now=NOW)] == [
        ("k", ALICE)
    ]


def test_checkpoint_metadata_must_be_json(backend: Backend) -> None:
    record = CheckpointRecord("t1", "", "c1", None, "bytes", b"x", {"at": NOW})
    with pytest.raises(ValueError, match="checkpoint metadata must be JSON"):
        backend.put_checkpoint(ALICE, record)
    assert backend.get_checkpoints(ALICE, CheckpointQuery()) == []


async def test_bad_windows_are_refused(backend: Backend) -> None:
    backend.put_items(ALICE, [item("k", {"n": 1})], [])
    with pytest.raises(InvalidInput, match="limit"):
        backend.search_items(ALICE, ItemQuery(limit=-1), now=NOW)
    with pytest.raises(InvalidInput, match="offset"):
        await backend.asearch_items(ALICE, ItemQuery(offset=-1), now=NOW)
    with pytest.raises(InvalidInput, match="limit"):
        backend.get_checkpoints(ALICE, CheckpointQuery(limit=1.5))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="limit"):
        await backend.aget_checkpoints(ALICE, CheckpointQuery(limit=-3))


async def test_an_unknown_namespace_match_is_refused(backend: Backend) -> None:
    backend.put_items(ALICE, [item("k", {"n": 1})], [])
    rule = MatchRule("contains", ("notes",))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown namespace match 'contains'"):
        backend.list_namespaces(ALICE, [rule], now=NOW)
    with pytest.raises(InvalidInput, match="unknown namespace match"):
        await backend.alist_namespaces(ALICE, [rule], now=NOW)
    assert backend.list_namespaces(ALICE, [MatchRule("prefix", ("notes",))], now=NOW) == [
        ("notes",)
    ]


async def test_empty_batches_change_nothing_and_still_need_a_scope(backend: Backend) -> None:
    backend.put_items(ALICE, [item("k", {"n": 1})], [])
    backend.put_items(ALICE, [], [])
    await backend.aput_items(ALICE, [], [])
    backend.put_checkpoint_writes(ALICE, [], replace=True)
    await backend.aput_checkpoint_writes(ALICE, [], replace=False)
    assert backend.get_items(ALICE, [], now=NOW) == []
    assert await backend.aget_items(ALICE, [], now=NOW) == []
    assert keys(backend, ALICE) == ["k"]
    for call in (
        lambda: backend.put_items(None, [], []),  # type: ignore[arg-type]
        lambda: backend.put_checkpoint_writes(None, [], replace=True),  # type: ignore[arg-type]
        lambda: backend.get_items(None, [], now=NOW),  # type: ignore[arg-type]
    ):
        with pytest.raises(MissingScope):
            call()
    with pytest.raises(MissingScope):
        await backend.aget_items(None, [], now=NOW)  # type: ignore[arg-type]
    with pytest.raises(MissingScope):
        await backend.aput_items(None, [], [])  # type: ignore[arg-type]


def test_rank_items_puts_items_without_embeddings_last() -> None:
    north = StoreItem(("n",), "north", {}, embeddings={"text": [0.0, 1.0]})
    mixed = StoreItem(("n",), "mixed", {}, embeddings={"a": [1.0, 0.0], "b": [0.6, 0.8]})
    plain = StoreItem(("n",), "plain", {})
    ranked = rank_items([plain, mixed, north], [1.0, 0.0], limit=3, offset=0)
    assert [(i.key, round(s, 6) if s is not None else s) for i, s in ranked] == [
        ("mixed", 1.0),  # its best field counts
        ("north", 0.0),
        ("plain", None),
    ]
    assert [i.key for i, _ in rank_items([plain, mixed, north], [1.0, 0.0], 2, 1)] == [
        "north",
        "plain",
    ]


def test_rank_items_refuses_a_query_of_another_dimension() -> None:
    stored = StoreItem(("n",), "k", {}, embeddings={"text": [1.0, 0.0]})
    with pytest.raises(ValueError, match="2 dimensions, the query 3"):
        rank_items([stored], [1.0, 0.0, 0.0], limit=1, offset=0)


@pytest.mark.parametrize("stored", ['"notes"', '{"a": 1}', '["a", 1]', "null", "[", ""])
def test_a_stored_namespace_must_be_a_list_of_labels(stored: str) -> None:
    with pytest.raises(StorageError, match="stored namespace is not"):
        decode_namespace(stored)


def test_namespaces_are_stored_one_to_one() -> None:
    for namespace in [("a", "b"), ("a.b",), ("a", "b,c"), ('"', "\\"), ("é",), ("e\u0301",)]:
        assert decode_namespace(encode_namespace(namespace)) == namespace
    assert encode_namespace(("a.b",)) != encode_namespace(("a", "b"))


# -- copying and pruning threads, deleting checkpoints: the caller's rows only ---------------

ALICE_B = Scope("tenant_b", "alice")  # the same user id in another tenant
Rows = list[tuple[str, str, str, int]]


def plant_threads(backend: Backend, user: Scope) -> None:
    """The same ids for every user: threads t1 (two namespaces) and t2, runs r1 and r2."""
    for thread, ns, cid, run in (
        ("t1", "", "c1", "r1"),
        ("t1", "", "c2", "r2"),
        ("t1", "sub", "c1", "r1"),
        ("t1", "sub", "c3", "r2"),
        ("t2", "", "c1", "r1"),
    ):
        parent = None if cid == "c1" else "c1"
        backend.put_checkpoint(
            user, CheckpointRecord(thread, ns, cid, parent, "bytes", b"x", {"run_id": run})
        )
        write = WriteRecord(thread, ns, cid, "task", 0, "ch", "bytes", cid.encode())
        backend.put_checkpoint_writes(user, [write], replace=True)


def rows(backend: Backend, user: Scope) -> Rows:
    return sorted(
        (r.thread_id, r.checkpoint_ns, r.checkpoint_id, len(r.writes))
        for r in backend.get_checkpoints(user, CheckpointQuery())
    )


def twins(backend: Backend, name: str) -> list[Any]:
    """The sync method and its async twin, both as coroutine functions."""
    sync, twin = getattr(backend, name), getattr(backend, f"a{name}")

    async def run_sync(*args: Any, **kwargs: Any) -> Any:
        return sync(*args, **kwargs)

    return [run_sync, twin]


FULL: Rows = [
    ("t1", "", "c1", 1),
    ("t1", "", "c2", 1),
    ("t1", "sub", "c1", 1),
    ("t1", "sub", "c3", 1),
    ("t2", "", "c1", 1),
]


@pytest.mark.parametrize("half", [0, 1], ids=["sync", "async"])
async def test_copy_prune_and_delete_act_on_the_callers_rows_only(
    backend: Backend, half: int
) -> None:
    for user in (ALICE, BOB, ALICE_B):
        plant_threads(backend, user)
    copy = twins(backend, "copy_thread")[half]
    prune = twins(backend, "prune_threads")[half]
    delete = twins(backend, "delete_checkpoints")[half]

    assert await copy(BOB, "t1", "t3") == 4
    t3 = [("t3", ns, cid, n) for t, ns, cid, n in FULL if t == "t1"]
    assert rows(backend, BOB) == sorted(FULL + t3)
    assert await prune(BOB, ["t1", "t9"], keep_latest=True) == 2  # the newest per namespace
    assert rows(backend, BOB) == sorted([*FULL[1:2], *FULL[3:], *t3])
    runs = CheckpointQuery(filter=parse_filter({"run_id": {"$in": ["r1"]}}))
    assert await delete(BOB, runs) == 3  # t2's c1 and t3's two c1
    assert rows(backend, BOB) == sorted([FULL[1], FULL[3], t3[1], t3[3]])
    assert await prune(BOB, ["t3"], keep_latest=False) == 2
    assert rows(backend, BOB) == [FULL[1], FULL[3]]
    for user in (ALICE, ALICE_B):  # the same ids, never touched
        assert rows(backend, user) == FULL


async def test_copy_prune_and_delete_refuse_before_touching_anything(backend: Backend) -> None:
    plant_threads(backend, ALICE)
    everything = CheckpointQuery()
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception]]] = [
        ("copy_thread", (None, "t1", "t3"), {}, MissingScope),
        ("copy_thread", (ALICE.header, "t1", "t3"), {}, MissingScope),
        ("prune_threads", (None, ["t1"]), {"keep_latest": False}, MissingScope),
        ("prune_threads", (ALICE, "t1"), {"keep_latest": False}, InvalidInput),  # t and 1
        ("delete_checkpoints", (None, CheckpointQuery("t1")), {}, MissingScope),
        ("delete_checkpoints", (ALICE, everything), {}, InvalidInput),  # all by omission
        ("delete_checkpoints", (ALICE, CheckpointQuery("t1", limit=1)), {}, InvalidInput),
    ]
    for name, args, kwargs, error in calls:
        for run in twins(backend, name):
            with pytest.raises(error):
                await run(*args, **kwargs)
    assert rows(backend, ALICE) == FULL
    assert backend.copy_thread(ALICE, "t1", "t1") == 0  # onto itself: nothing to do
    assert await backend.aprune_threads(ALICE, [], keep_latest=True) == 0
    assert rows(backend, ALICE) == FULL


def test_items_written_without_their_times_get_them(backend: Any) -> None:
    """The backend fills an item's creation and update times when the caller left them out
    (LangGraph's store needs both; it failed on an assertion before)."""
    backend.put_items(ALICE, [StoreItem(("notes",), "k", {"v": 1})], [])
    [item] = backend.get_items(ALICE, [(("notes",), "k")], now=datetime.now(timezone.utc))
    assert item.value == {"v": 1}
    assert item.created_at is not None and item.updated_at is not None
