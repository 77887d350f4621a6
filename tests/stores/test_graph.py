"""The graph storage protocol itself, below the LangGraph adapters, on every backend: what it
refuses before anything is written, how it ranks, and calls with nothing to do."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from muxi_isolation import Backend, MissingScope, Scope, ScopeViolation
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
    with pytest.raises(ValueError, match=match):
        backend.put_items(ALICE, [good, bad], [])
    with pytest.raises(ValueError, match=match):
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
    with pytest.raises(ValueError, match="limit"):
        backend.search_items(ALICE, ItemQuery(limit=-1), now=NOW)
    with pytest.raises(ValueError, match="offset"):
        await backend.asearch_items(ALICE, ItemQuery(offset=-1), now=NOW)
    with pytest.raises(ValueError, match="limit"):
        backend.get_checkpoints(ALICE, CheckpointQuery(limit=1.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await backend.aget_checkpoints(ALICE, CheckpointQuery(limit=-3))


async def test_an_unknown_namespace_match_is_refused(backend: Backend) -> None:
    backend.put_items(ALICE, [item("k", {"n": 1})], [])
    rule = MatchRule("contains", ("notes",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown namespace match 'contains'"):
        backend.list_namespaces(ALICE, [rule], now=NOW)
    with pytest.raises(ValueError, match="unknown namespace match"):
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


@pytest.mark.parametrize("stored", ['"notes"', '{"a": 1}', '["a", 1]', "null"])
def test_a_stored_namespace_must_be_a_list_of_labels(stored: str) -> None:
    with pytest.raises(ValueError, match="not a list of labels"):
        decode_namespace(stored)


def test_namespaces_are_stored_one_to_one() -> None:
    for namespace in [("a", "b"), ("a.b",), ("a", "b,c"), ('"', "\\"), ("é",), ("e\u0301",)]:
        assert decode_namespace(encode_namespace(namespace)) == namespace
    assert encode_namespace(("a.b",)) != encode_namespace(("a", "b"))
