"""MuxiVectorStore: LangChain's standard suites and our isolation cases, on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from muxi_isolation import (
    Backend,
    InvalidFilter,
    MissingScope,
    ReservedKey,
    Scope,
    use_scope,
)
from muxi_isolation.adapters.langchain import HashingEmbeddings, MuxiRetriever, MuxiVectorStore

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")
EMBED = HashingEmbeddings(64)


def fresh_scope() -> Scope:
    return Scope("standard", f"user_{uuid.uuid4().hex}")


# -- LangChain's standard suites -------------------------------------------------------------


class TestStandardVectorStore(VectorStoreIntegrationTests):
    """Sync and async, on each backend kind of the ``backend`` fixture."""

    @pytest.fixture
    def vectorstore(self, backend: Backend) -> Iterator[VectorStore]:  # type: ignore[override]
        scope = fresh_scope()
        store = MuxiVectorStore(backend, self.get_embeddings(), scope=scope)
        try:
            yield store
        finally:
            backend.forget_user(scope)


class TestStandardRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _store(self, backend: Backend) -> Iterator[None]:
        scope = fresh_scope()
        self.store = MuxiVectorStore(backend, DeterministicFakeEmbedding(size=6), scope=scope)
        self.store.add_texts([f"document {i}" for i in range(5)])
        # another user's documents must never fill the results
        MuxiVectorStore(backend, DeterministicFakeEmbedding(size=6), scope=ALICE).add_texts(
            ["alice only"] * 5
        )
        yield
        backend.forget_user(scope)

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return MuxiRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self.store}

    @property
    def retriever_query_example(self) -> str:
        return "document"


# -- isolation --------------------------------------------------------------------------------


def store(backend: Backend, scope: Scope | None) -> MuxiVectorStore:
    return MuxiVectorStore(backend, EMBED, scope=scope)


def test_users_share_ids_but_never_documents(backend: Backend) -> None:
    alice, bob, alice_b = store(backend, ALICE), store(backend, BOB), store(backend, ALICE_B)
    alice.add_texts(["alice likes python"], [{"topic": "lang"}], ids=["1"])
    bob.add_texts(["bob likes rust"], [{"topic": "lang"}], ids=["1"])
    assert [d.page_content for d in alice.similarity_search("likes", k=10)] == [
        "alice likes python"
    ]
    assert [d.page_content for d in bob.similarity_search("likes", k=10)] == ["bob likes rust"]
    assert alice_b.similarity_search("likes", k=10) == []
    assert alice_b.max_marginal_relevance_search("likes", k=10) == []


@pytest.mark.parametrize("other", [BOB, ALICE_B], ids=["other-user", "other-tenant"])
def test_foreign_ids_are_missing_and_untouched(backend: Backend, other: Scope) -> None:
    alice, intruder = store(backend, ALICE), store(backend, other)
    alice.add_texts(["secret"], ids=["doc-1"])
    assert intruder.get_by_ids(["doc-1"]) == []
    intruder.delete(["doc-1"])
    intruder.delete(filter={"anything": {"$exists": False}})
    assert alice.get_by_ids(["doc-1"]) == [Document(id="doc-1", page_content="secret")]


@pytest.mark.parametrize("other", [BOB, ALICE_B], ids=["other-user", "other-tenant"])
async def test_foreign_ids_are_missing_and_untouched_async(backend: Backend, other: Scope) -> None:
    alice, intruder = store(backend, ALICE), store(backend, other)
    await alice.aadd_texts(["secret"], ids=["doc-1"])
    assert await intruder.aget_by_ids(["doc-1"]) == []
    await intruder.adelete(["doc-1"])
    assert await alice.aget_by_ids(["doc-1"]) == [Document(id="doc-1", page_content="secret")]


def test_upsert_with_a_foreign_id_never_overwrites(backend: Backend) -> None:
    alice, bob = store(backend, ALICE), store(backend, BOB)
    alice.add_texts(["alice's text"], ids=["x"])
    bob.add_texts(["bob's text"], ids=["x"])
    assert alice.get_by_ids(["x"])[0].page_content == "alice's text"
    assert bob.get_by_ids(["x"])[0].page_content == "bob's text"


RESERVED_METADATA = [
    {"muxi_user_id": "bob"},
    {"muxi_tenant_id": "tenant_b"},
    {"muxi_session_id": "s"},
]


@pytest.mark.parametrize("metadata", RESERVED_METADATA)
def test_reserved_keys_in_metadata_raise(backend: Backend, metadata: dict[str, Any]) -> None:
    alice = store(backend, ALICE)
    with pytest.raises(ReservedKey):
        alice.add_texts(["x"], [metadata])
    with pytest.raises(ReservedKey):
        alice.add_documents([Document("ok"), Document("x", metadata=metadata)])
    assert alice.similarity_search("x", k=10) == []  # nothing of the batch was written


@pytest.mark.parametrize("metadata", RESERVED_METADATA)
async def test_reserved_keys_in_metadata_raise_async(
    backend: Backend, metadata: dict[str, Any]
) -> None:
    with pytest.raises(ReservedKey):
        await store(backend, ALICE).aadd_texts(["x"], [metadata])


HOSTILE_FILTERS = [
    {"user_id": "bob"},
    {"tenant_id": "tenant_b"},
    {"muxi_user_id": "bob"},
    {"$or": [{"topic": "lang"}, {"user_id": "bob"}]},
    {"$not": {"muxi_tenant_id": "tenant_a"}},
    {"session_id": {"$exists": True}},
]


@pytest.mark.parametrize("hostile", HOSTILE_FILTERS)
def test_filters_naming_the_scope_raise(backend: Backend, hostile: dict[str, Any]) -> None:
    alice = store(backend, ALICE)
    alice.add_texts(["x"], [{"topic": "lang"}])
    with pytest.raises(ReservedKey):
        alice.similarity_search("x", filter=hostile)
    with pytest.raises(ReservedKey):
        alice.max_marginal_relevance_search("x", filter=hostile)
    with pytest.raises(ReservedKey):
        alice.delete(filter=hostile)


@pytest.mark.parametrize("hostile", HOSTILE_FILTERS)
async def test_filters_naming_the_scope_raise_async(
    backend: Backend, hostile: dict[str, Any]
) -> None:
    with pytest.raises(ReservedKey):
        await store(backend, ALICE).asimilarity_search("x", filter=hostile)


def test_an_or_filter_cannot_widen_the_scope(backend: Backend) -> None:
    store(backend, BOB).add_texts(["bob jazz"], [{"genre": "jazz"}])
    alice = store(backend, ALICE)
    alice.add_texts(["alice rock"], [{"genre": "rock"}])
    wide = {"$or": [{"genre": "jazz"}, {"genre": {"$exists": True}}, {"$not": {"genre": "x"}}]}
    assert [d.page_content for d in alice.similarity_search("jazz", k=10, filter=wide)] == [
        "alice rock"
    ]


def test_filter_dialect(backend: Backend) -> None:
    alice = store(backend, ALICE)
    alice.add_texts(
        ["a", "b", "c"],
        [{"year": 1999, "tags": ["x"]}, {"year": 2005, "tags": ["y"]}, {"year": 2010}],
        ids=["a", "b", "c"],
    )

    def ids(found: list[Document]) -> list[str | None]:
        return sorted(d.id for d in found)

    assert ids(alice.similarity_search("q", k=10, filter={"year": {"$gte": 2005}})) == ["b", "c"]
    assert ids(alice.similarity_search("q", k=10, filter={"tags": {"$contains": "x"}})) == ["a"]
    either = {"$or": [{"year": 1999}, {"year": 2010}]}
    assert ids(alice.similarity_search("q", k=10, filter=either)) == ["a", "c"]
    assert ids(alice.max_marginal_relevance_search("q", k=10, filter=either)) == ["a", "c"]
    alice.delete(filter={"year": {"$lt": 2000}})
    assert ids(alice.get_by_ids(["a", "b", "c"])) == ["b", "c"]
    with pytest.raises(InvalidFilter):
        alice.similarity_search("q", filter={"year": {"$regex": ".*"}})


def test_scores_and_relevance(backend: Backend) -> None:
    alice = store(backend, ALICE)
    alice.add_texts(["red apple", "green apple", "blue sky"], ids=["r", "g", "b"])
    scored = alice.similarity_search_with_score("red apple", k=3)
    assert scored[0][0].id == "r"
    assert scored[0][1] == pytest.approx(1.0)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    relevance = alice.similarity_search_with_relevance_scores("red apple", k=3)
    assert [d.id for d, _ in relevance] == [d.id for d, _ in scored]
    assert all(0.0 <= r <= 1.0 for _, r in relevance)
    assert relevance[0][1] == pytest.approx(1.0)
    above = alice.similarity_search_with_relevance_scores("red apple", k=3, score_threshold=0.99)
    assert [d.id for d, _ in above] == ["r"]
    by_vector = alice.similarity_search_by_vector(EMBED.embed_query("blue sky"), k=1)
    assert [d.id for d in by_vector] == ["b"]


async def test_async_searches(backend: Backend) -> None:
    alice = store(backend, ALICE)
    await alice.aadd_texts(["red apple", "green apple", "blue sky"], ids=["r", "g", "b"])
    assert [d.id for d in await alice.asimilarity_search("blue sky", k=1)] == ["b"]
    scored = await alice.asimilarity_search_with_score("red apple", k=1)
    assert scored[0][0].id == "r" and scored[0][1] == pytest.approx(1.0)
    relevance = await alice.asimilarity_search_with_relevance_scores("red apple", k=1)
    assert relevance[0][1] == pytest.approx(1.0)
    vector = await EMBED.aembed_query("green apple")
    assert [d.id for d in await alice.asimilarity_search_by_vector(vector, k=1)] == ["g"]
    mmr = await alice.amax_marginal_relevance_search("apple", k=2, fetch_k=3)
    assert len(mmr) == 2
    assert await alice.amax_marginal_relevance_search_by_vector(vector, k=1) == [
        Document(id="g", page_content="green apple")
    ]


def test_mmr_prefers_diversity(backend: Backend) -> None:
    alice = store(backend, ALICE)
    alice.add_texts(
        ["jazz piano trio", "jazz piano trio live", "rock guitar"], ids=["a", "a2", "rock"]
    )
    similar = alice.similarity_search("jazz piano guitar", k=2)
    diverse = alice.max_marginal_relevance_search("jazz piano guitar", k=2, lambda_mult=0.1)
    assert {d.id for d in similar} == {"a", "a2"}
    assert diverse[0].id in {"a", "a2"} and diverse[1].id == "rock"
    vector = EMBED.embed_query("jazz piano guitar")
    assert alice.max_marginal_relevance_search_by_vector(vector, k=2, lambda_mult=0.1) == diverse
    with pytest.raises(ValueError, match="lambda_mult"):
        alice.max_marginal_relevance_search("x", lambda_mult=2.0)


def test_scope_from_context_and_fail_closed(backend: Backend) -> None:
    unbound = store(backend, None)
    with pytest.raises(MissingScope):
        unbound.add_texts(["x"])
    with pytest.raises(MissingScope):
        unbound.similarity_search("x")
    with pytest.raises(MissingScope):
        unbound.get_by_ids(["x"])
    with use_scope(ALICE):
        unbound.add_texts(["alice's"], ids=["1"])
    with use_scope(BOB):
        assert unbound.get_by_ids(["1"]) == []
        assert unbound.similarity_search("alice's") == []
    assert store(backend, ALICE).get_by_ids(["1"])[0].page_content == "alice's"
    assert unbound.with_scope(ALICE).get_by_ids(["1"])[0].page_content == "alice's"


async def test_scope_from_context_async(backend: Backend) -> None:
    unbound = store(backend, None)
    with pytest.raises(MissingScope):
        await unbound.asimilarity_search("x")
    with use_scope(ALICE):
        await unbound.aadd_texts(["alice's"], ids=["1"])
        assert [d.id for d in await unbound.asimilarity_search("alice's")] == ["1"]


def test_from_texts(backend: Backend) -> None:
    built = MuxiVectorStore.from_texts(
        ["one", "two"], EMBED, [{"n": 1}, {"n": 2}], ids=["1", "2"], backend=backend, scope=ALICE
    )
    assert built.get_by_ids(["2"]) == [Document(id="2", page_content="two", metadata={"n": 2})]
    docs = MuxiVectorStore.from_documents(
        [Document("three", id="3")], EMBED, backend=backend, scope=BOB
    )
    assert docs.get_by_ids(["3"]) == [Document(id="3", page_content="three")]
    assert store(backend, BOB).get_by_ids(["1"]) == []
    with pytest.raises(TypeError, match="backend"):
        MuxiVectorStore.from_texts(["x"], EMBED, scope=ALICE)


async def test_afrom_texts(backend: Backend) -> None:
    built = await MuxiVectorStore.afrom_texts(
        ["one"], EMBED, ids=["1"], backend=backend, scope=ALICE
    )
    assert await built.aget_by_ids(["1"]) == [Document(id="1", page_content="one")]
    docs = await MuxiVectorStore.afrom_documents(
        [Document("d", id="d")], EMBED, backend=backend, scope=ALICE
    )
    assert [d.id for d in await docs.aget_by_ids(["1", "d"])] == ["1", "d"]


def test_bad_calls(backend: Backend) -> None:
    alice = store(backend, ALICE)
    with pytest.raises(ValueError, match="ids or a filter"):
        alice.delete()
    with pytest.raises(TypeError, match="filters"):
        alice.similarity_search("x", filters={"a": 1})
    with pytest.raises(ValueError, match="metadatas"):
        alice.add_texts(["a", "b"], [{}])
    with pytest.raises(ValueError, match="ids"):
        alice.add_texts(["a", "b"], ids=["1"])
    with pytest.raises(MissingScope):
        MuxiVectorStore(backend, EMBED, scope="tenant_a:alice")  # type: ignore[arg-type]


def test_a_repeated_id_in_one_batch_keeps_the_last(backend: Backend) -> None:
    alice = store(backend, ALICE)
    assert alice.add_texts(["first", "second"], ids=["same", "same"]) == ["same", "same"]
    assert alice.get_by_ids(["same"]) == [Document(id="same", page_content="second")]


def test_retriever_per_user(backend: Backend) -> None:
    store(backend, ALICE).add_texts(["alice's notes on jazz"])
    store(backend, BOB).add_texts(["bob's notes on jazz"])
    retriever = store(backend, BOB).as_retriever(k=5)
    assert isinstance(retriever, MuxiRetriever)
    assert [d.page_content for d in retriever.invoke("jazz")] == ["bob's notes on jazz"]
    mmr = store(backend, BOB).as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert [d.page_content for d in mmr.invoke("jazz")] == ["bob's notes on jazz"]
    with pytest.raises(ValueError, match="disagree"):
        MuxiRetriever(vectorstore=store(backend, BOB), k=2, search_kwargs={"k": 3})
