"""MuxiStore: namespaces under the caller's (tenant, user), compared as tuples, exactly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, PutOp, SearchOp

from muxi_isolation import Backend, InvalidFilter, InvalidInput, MissingScope, Scope, use_scope
from muxi_isolation.adapters.langchain import HashingEmbeddings
from muxi_isolation.adapters.langgraph import MuxiStore

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")
HOSTILE = [
    "%",
    "_",
    ".",
    ":",
    "*",
    "a%",
    "a_b",
    "a.b",
    "a:b",
    " ",
    "\u200b",
    "''",
    '"',
    "\\",
    "é",
    "e\u0301",
    "ﬁ",
    "用户",
    "🙂",
    "x" * 300,
    "[",
    "]",
    "$[0]",
    "null",
]


def store_for(backend: Backend, scope: Scope, **options) -> MuxiStore:
    return MuxiStore(backend, **options).for_user(scope)


def test_same_namespace_is_a_different_one_per_user(backend: Backend) -> None:
    for user in (ALICE, BOB, ALICE_B):
        store_for(backend, user).put(("memories",), "k", {"text": f"{user} likes tea"})
    for user in (ALICE, BOB, ALICE_B):
        store = store_for(backend, user)
        assert store.get(("memories",), "k").value == {"text": f"{user} likes tea"}
        assert [i.value["text"] for i in store.search(("memories",))] == [f"{user} likes tea"]
        assert store.list_namespaces() == [("memories",)]
    store_for(backend, BOB).delete(("memories",), "k")
    assert store_for(backend, ALICE).get(("memories",), "k") is not None
    assert store_for(backend, BOB).get(("memories",), "k") is None


def test_a_namespace_naming_another_user_stays_your_own(backend: Backend) -> None:
    store_for(backend, BOB).put(("memories", "bob"), "k", {"text": "bob's secret"})
    mallory = store_for(backend, ALICE)
    assert mallory.get(("memories", "bob"), "k") is None
    assert mallory.search(("memories",)) == [] and mallory.search(()) == []
    mallory.put(("memories", "bob"), "k", {"text": "overwrite attempt"})
    assert store_for(backend, BOB).get(("memories", "bob"), "k").value == {"text": "bob's secret"}


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_are_stored_and_isolated_exactly(backend: Backend, label: str) -> None:
    ns = ("docs", label)
    alice, bob = store_for(backend, ALICE), store_for(backend, BOB)
    alice.batch([PutOp(ns, label, {"v": "alice"}), PutOp(("docs", "plain"), "k", {"v": "x"})])
    bob.batch([PutOp(ns, label, {"v": "bob"})])
    [got] = alice.batch([GetOp(ns, label)])
    assert (
        got is not None and got.namespace == ns and got.key == label and got.value["v"] == "alice"
    )
    found = alice.batch([SearchOp(ns)])[0]
    assert [(i.namespace, i.value["v"]) for i in found] == [(ns, "alice")]  # no prefix leak
    listed = alice.batch([ListNamespacesOp(max_depth=None, limit=100)])[0]
    assert sorted(listed) == sorted([ns, ("docs", "plain")])
    assert bob.batch([ListNamespacesOp()])[0] == [ns]
    assert alice.batch([GetOp(("docs", label + "x"), label)]) == [None]


def test_langgraph_itself_refuses_dots_and_empty_labels(backend: Backend) -> None:
    store = store_for(backend, ALICE)
    for bad in (("a.b",), ("",), ("langgraph",)):
        with pytest.raises(InvalidNamespaceError):
            store.put(bad, "k", {"v": 1})
    with pytest.raises(InvalidInput):
        store.batch([PutOp(("",), "k", {"v": 1})])  # our own check, through batch
    with pytest.raises(InvalidInput):
        store.batch([PutOp(("a\x00",), "k", {"v": 1})])


def test_prefix_and_suffix_compare_labels_not_strings(backend: Backend) -> None:
    store = store_for(backend, ALICE)
    for ns in [("a",), ("a", "b"), ("ab",), ("a%",), ("a", "b", "c"), ("x", "b"), ("a_",)]:
        store.put(ns, "k", {"ns": list(ns)})
    assert store.list_namespaces(prefix=("a",)) == [("a",), ("a", "b"), ("a", "b", "c")]
    assert store.list_namespaces(prefix=("a%",)) == [("a%",)]
    assert store.list_namespaces(suffix=("b",)) == [("a", "b"), ("x", "b")]
    assert store.list_namespaces(prefix=("*", "b")) == [("a", "b"), ("a", "b", "c"), ("x", "b")]
    assert store.list_namespaces(max_depth=1) == [("a",), ("a%",), ("a_",), ("ab",), ("x",)]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b"), ("a", "b", "c")]
    assert [i.namespace for i in store.search(("a",))] == [("a", "b", "c"), ("a", "b"), ("a",)]
    assert store.search(("a", "*")) == []  # a search prefix is literal


def test_filters_and_semantic_search_stay_in_the_users_items(backend: Backend) -> None:
    embed = HashingEmbeddings(64)
    index = {"dims": 64, "embed": embed, "fields": ["text"]}
    alice, bob = store_for(backend, ALICE, index=index), store_for(backend, BOB, index=index)
    facts = ["likes python", "lives in paris", "plays chess", "owns a cat"]
    for i, fact in enumerate(facts):
        alice.put(("memories",), f"a{i}", {"text": fact, "n": i})
    bob.put(("memories",), "b0", {"text": "likes python very much", "n": 0})
    hits = alice.search(("memories",), query="python", limit=2)
    assert hits[0].value["text"] == "likes python" and hits[0].score is not None
    assert all(h.key.startswith("a") for h in hits) and len(hits) == 2
    assert [h.key for h in alice.search(("memories",), query="x", limit=10)] != []
    assert len(alice.search(("memories",), query="x", limit=10)) == 4  # min(limit, matches)
    assert [h.key for h in alice.search(("memories",), filter={"n": {"$gte": 2}})] == ["a3", "a2"]
    assert [h.key for h in bob.search(("memories",), query="python")] == ["b0"]
    with pytest.raises(InvalidFilter):
        alice.search(("memories",), filter={"text": {"nested": 1}})


async def test_async_batch_and_ttl(backend: Backend) -> None:
    now = [datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)]
    store = MuxiStore(backend, clock=lambda: now[0]).for_user(ALICE)
    await store.aput(("s",), "short", {"v": 1}, ttl=1)
    await store.aput(("s",), "long", {"v": 2})
    now[0] += timedelta(seconds=50)
    assert (await store.aget(("s",), "short")) is not None  # read: refreshed to +1 min
    now[0] += timedelta(seconds=50)
    assert (await store.aget(("s",), "short", refresh_ttl=False)) is not None
    now[0] += timedelta(seconds=20)
    assert (await store.aget(("s",), "short")) is None
    assert [i.key for i in await store.asearch(("s",))] == ["long"]
    assert await store.alist_namespaces() == [("s",)]
    assert (await MuxiStore(backend).for_user(BOB).aget(("s",), "long")) is None


def test_no_scope_fails_closed_and_context_scope_works(backend: Backend) -> None:
    store = MuxiStore(backend)
    with pytest.raises(MissingScope):
        store.get(("a",), "k")
    with use_scope(ALICE):
        store.put(("a",), "k", {"v": "alice"})
    with use_scope(BOB):
        assert store.get(("a",), "k") is None
    assert backend.forget_user(ALICE)["store_items"] == 1
    with use_scope(ALICE):
        assert store.get(("a",), "k") is None
