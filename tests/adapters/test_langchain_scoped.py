"""scope_vectorstore over stores we do not own: InMemoryVectorStore and a real PGVector."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from muxi_isolation import InvalidFilter, ReservedKey, Scope, ScopeViolation
from muxi_isolation.adapters.langchain import (
    HashingEmbeddings,
    ScopedVectorStore,
    UnsupportedStore,
    register_filter_dialect,
    scope_vectorstore,
)
from muxi_isolation.policy import foreign_id_prefix as id_prefix

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")
EMBED = HashingEmbeddings(64)
KINDS = ["in_memory", "pgvector"]


@pytest.fixture(scope="session")
def pg_url(postgres_urls: Any) -> str:
    """The suite's real PostgreSQL + pgvector (conftest), as the superuser: PGVector creates
    its own tables."""
    return str(postgres_urls.admin)


def psycopg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def make_inner(request: pytest.FixtureRequest) -> Iterator[Callable[[str], VectorStore]]:
    """A fresh, empty foreign store of a kind (sync)."""
    cleanups: list[Callable[[], None]] = []

    def make(kind: str) -> VectorStore:
        if kind == "in_memory":
            return InMemoryVectorStore(EMBED)
        from langchain_postgres import PGVector

        engine = create_engine(psycopg_url(request.getfixturevalue("pg_url")))
        store = PGVector(EMBED, connection=engine, collection_name=f"c_{uuid.uuid4().hex}")

        def cleanup() -> None:
            store.delete_collection()
            engine.dispose()

        cleanups.append(cleanup)
        return store

    yield make
    for cleanup in cleanups:
        cleanup()


@pytest.fixture(params=KINDS)
def inner(request: pytest.FixtureRequest, make_inner: Callable[[str], VectorStore]) -> VectorStore:
    return make_inner(request.param)


@pytest.fixture(params=KINDS)
async def ainner(request: pytest.FixtureRequest) -> AsyncIterator[VectorStore]:
    """A fresh foreign store whose async methods work (PGVector needs an async engine)."""
    if request.param == "in_memory":
        yield InMemoryVectorStore(EMBED)
        return
    from langchain_postgres import PGVector

    engine = create_async_engine(psycopg_url(request.getfixturevalue("pg_url")))
    store = PGVector(EMBED, connection=engine, collection_name=f"c_{uuid.uuid4().hex}")
    yield store
    await store.adelete_collection()
    await engine.dispose()


def raw_docs(store: VectorStore, ids: list[str]) -> list[Document]:
    return store.get_by_ids(ids)


# -- writes are stamped, ids are per user ------------------------------------------------------


def test_writes_are_stamped_and_stripped(inner: VectorStore) -> None:
    alice = scope_vectorstore(inner, ALICE.with_session("s1"))
    assert alice.add_texts(["alice's note"], [{"topic": "jazz"}], ids=["n1"]) == ["n1"]
    [stored] = raw_docs(inner, [id_prefix(ALICE) + "n1"])
    assert stored.metadata == {
        "topic": "jazz",
        "muxi_tenant_id": "tenant_a",
        "muxi_user_id": "alice",
        "muxi_session_id": "s1",
    }
    assert alice.get_by_ids(["n1"]) == [
        Document(id="n1", page_content="alice's note", metadata={"topic": "jazz"})
    ]
    assert alice.similarity_search("alice's note", k=5) == alice.get_by_ids(["n1"])


def test_generated_ids_and_documents(inner: VectorStore) -> None:
    alice = scope_vectorstore(inner, ALICE)
    original = [Document("a", metadata={"n": 1}), Document("b", id="given")]
    ids = alice.add_documents(original)
    assert ids[1] == "given" and len(ids[0]) == 36
    assert original == [Document("a", metadata={"n": 1}), Document("b", id="given")]
    assert sorted(d.page_content for d in alice.get_by_ids(ids)) == ["a", "b"]


@pytest.mark.parametrize("other", [BOB, ALICE_B], ids=["other-user", "other-tenant"])
def test_same_ids_for_two_users_never_collide(inner: VectorStore, other: Scope) -> None:
    alice, them = scope_vectorstore(inner, ALICE), scope_vectorstore(inner, other)
    alice.add_texts(["alice's"], ids=["1"])
    them.add_texts(["theirs"], ids=["1"])
    assert [d.page_content for d in alice.get_by_ids(["1"])] == ["alice's"]
    assert [d.page_content for d in them.get_by_ids(["1"])] == ["theirs"]


@pytest.mark.parametrize(
    "metadata", [{"muxi_user_id": "bob"}, {"muxi_tenant_id": "x"}, {"muxi_session_id": "s"}]
)
def test_reserved_metadata_raises_and_writes_nothing(
    inner: VectorStore, metadata: dict[str, Any]
) -> None:
    alice = scope_vectorstore(inner, ALICE)
    with pytest.raises(ReservedKey):
        alice.add_documents([Document("fine", id="f"), Document("x", metadata=metadata)])
    with pytest.raises(ReservedKey):
        alice.add_texts(["x"], [metadata])
    assert alice.get_by_ids(["f"]) == []


# -- reads are filtered, with the scope around the caller's filter -------------------------------


def test_searches_see_only_the_scope(inner: VectorStore) -> None:
    scope_vectorstore(inner, BOB).add_texts(["jazz piano"] * 3, [{"genre": "jazz"}] * 3)
    scope_vectorstore(inner, ALICE_B).add_texts(["jazz piano"], [{"genre": "jazz"}])
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["jazz guitar", "rock guitar"], [{"genre": "jazz"}, {"genre": "rock"}])
    query = EMBED.embed_query("jazz piano")
    for found in (
        alice.similarity_search("jazz piano", k=10),
        [d for d, _ in alice.similarity_search_with_score("jazz piano", k=10)],
        alice.similarity_search_by_vector(query, k=10),
        alice.max_marginal_relevance_search("jazz piano", k=10, fetch_k=10),
        alice.max_marginal_relevance_search_by_vector(query, k=10, fetch_k=10),
    ):
        assert sorted(d.page_content for d in found) == ["jazz guitar", "rock guitar"]
        assert all(set(d.metadata) == {"genre"} for d in found)
    assert len(alice.similarity_search("jazz piano", k=1)) == 1  # k counts only her rows


def test_a_wide_caller_filter_cannot_widen_the_scope(inner: VectorStore) -> None:
    scope_vectorstore(inner, BOB).add_texts(["bob jazz"], [{"genre": "jazz"}])
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["alice rock"], [{"genre": "rock"}])
    wide_dict = {"$or": [{"genre": {"$eq": "jazz"}}, {"genre": {"$exists": True}}]}
    assert [d.page_content for d in alice.similarity_search("jazz", filter=wide_dict)] == [
        "alice rock"
    ]
    narrow = {"genre": {"$eq": "jazz"}}
    assert alice.similarity_search("jazz", filter=narrow) == []


def test_callable_filters_see_no_scope_keys() -> None:
    inner = InMemoryVectorStore(EMBED)
    scope_vectorstore(inner, BOB).add_texts(["bob's"])
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["alice's"], [{"k": 1}], ids=["a"])
    seen: list[Document] = []

    def spy(doc: Document) -> bool:
        seen.append(doc)
        return True

    assert [d.id for d in alice.similarity_search("x", filter=spy)] == ["a"]
    assert seen == [Document(id="a", page_content="alice's", metadata={"k": 1})]
    assert [d.id for d in alice.similarity_search("x", filter={"k": {"$gte": 1}})] == ["a"]
    with pytest.raises(InvalidFilter):
        alice.similarity_search("x", filter=42)


HOSTILE = [
    {"muxi_user_id": "bob"},
    {"user_id": {"$eq": "bob"}},
    {"$or": [{"genre": "jazz"}, {"muxi_tenant_id": "tenant_b"}]},
    {"$not": {"muxi_user_id": {"$eq": "alice"}}},
    {"$and": [{"session_id": {"$exists": True}}]},
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_filters_naming_the_scope_raise(inner: VectorStore, hostile: dict[str, Any]) -> None:
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["x"])
    with pytest.raises(ReservedKey):
        alice.similarity_search("x", filter=hostile)
    with pytest.raises(ReservedKey):
        alice.max_marginal_relevance_search("x", filter=hostile)


def test_relevance_scores_use_the_stores_own_function() -> None:
    store = scope_vectorstore(InMemoryVectorStore(EMBED), ALICE)
    store.add_texts(["x"])
    with pytest.raises(NotImplementedError):  # InMemoryVectorStore defines none
        store.similarity_search_with_relevance_scores("x")


def test_pgvector_relevance_scores(make_inner: Callable[[str], VectorStore]) -> None:
    inner = make_inner("pgvector")
    scope_vectorstore(inner, BOB).add_texts(["red apple"])
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["red apple", "blue sky"], ids=["r", "b"])
    scored = alice.similarity_search_with_relevance_scores("red apple", k=5)
    assert [d.id for d, _ in scored] == ["r", "b"]
    assert scored[0][1] == pytest.approx(1.0)


# -- id-based operations check ownership -------------------------------------------------------


@pytest.mark.parametrize("other", [BOB, ALICE_B], ids=["other-user", "other-tenant"])
def test_foreign_ids_are_missing_and_untouched(inner: VectorStore, other: Scope) -> None:
    alice, intruder = scope_vectorstore(inner, ALICE), scope_vectorstore(inner, other)
    alice.add_texts(["secret"], ids=["doc-1"])
    stored_id = id_prefix(ALICE) + "doc-1"
    assert intruder.get_by_ids(["doc-1"]) == []
    assert intruder.get_by_ids([stored_id]) == []  # the raw id does not help either
    intruder.delete(["doc-1", stored_id])
    assert [d.page_content for d in raw_docs(inner, [stored_id])] == ["secret"]
    assert alice.get_by_ids(["doc-1"])[0].page_content == "secret"
    alice.delete(["doc-1"])
    assert raw_docs(inner, [stored_id]) == []


def test_delete_needs_ids(inner: VectorStore) -> None:
    with pytest.raises(ValueError, match="needs ids"):
        scope_vectorstore(inner, ALICE).delete()


def plant(inner: VectorStore, stored_id: str, owner: Scope, text: str = "planted") -> None:
    """Write straight into the foreign store, around the wrapper (a bug or an attacker)."""
    metadata = {"muxi_tenant_id": owner.tenant_id, "muxi_user_id": owner.user_id}
    inner.add_documents([Document(text, metadata=metadata)], ids=[stored_id])


def test_planted_records_are_dropped_and_never_deleted(
    inner: VectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    alice = scope_vectorstore(inner, ALICE)
    in_her_namespace = id_prefix(ALICE) + "p1"
    plant(inner, in_her_namespace, BOB)  # her id space, bob's stamp
    plant(inner, "raw-id", ALICE)  # her stamp, outside her id space
    with caplog.at_level(logging.ERROR, logger="muxi_isolation.adapters.langchain"):
        assert alice.get_by_ids(["p1"]) == []
    assert "dropped a document" in caplog.text
    alice.delete(["p1"])
    assert len(raw_docs(inner, [in_her_namespace])) == 1
    with pytest.raises(ScopeViolation):
        alice.add_texts(["overwrite"], ids=["p1"])
    assert raw_docs(inner, [in_her_namespace])[0].page_content == "planted"


class NoFilter:
    """A broken dialect that forgets the scope: verification must still hold."""

    def scoped(self, scope: Scope, caller: Any, view: Any) -> Any:
        return None


def test_verification_catches_what_filtering_missed(inner: VectorStore) -> None:
    scope_vectorstore(inner, BOB).add_texts(["bob jazz"] * 3)
    alice = scope_vectorstore(inner, ALICE, dialect=NoFilter())
    alice.add_texts(["alice jazz"])
    found = alice.similarity_search("bob jazz", k=4)
    assert [d.page_content for d in found] == ["alice jazz"]


# -- async twins ---------------------------------------------------------------------------------


async def test_async_twins(ainner: VectorStore) -> None:
    bob = scope_vectorstore(ainner, BOB)
    await bob.aadd_texts(["bob jazz"], ids=["1"])
    alice = scope_vectorstore(ainner, ALICE)
    assert await alice.aadd_texts(["alice jazz", "alice rock"], ids=["1", "2"]) == ["1", "2"]
    assert [d.page_content for d in await alice.aget_by_ids(["1"])] == ["alice jazz"]
    vector = EMBED.embed_query("jazz")
    for found in (
        await alice.asimilarity_search("jazz", k=5),
        [d for d, _ in await alice.asimilarity_search_with_score("jazz", k=5)],
        await alice.asimilarity_search_by_vector(vector, k=5),
        await alice.amax_marginal_relevance_search("jazz", k=5, fetch_k=5),
        await alice.amax_marginal_relevance_search_by_vector(vector, k=5, fetch_k=5),
    ):
        assert sorted(d.page_content for d in found) == ["alice jazz", "alice rock"]
    with pytest.raises(ReservedKey):
        await alice.asimilarity_search("jazz", filter={"muxi_user_id": "bob"})
    with pytest.raises(ReservedKey):
        await alice.aadd_documents([Document("x", metadata={"muxi_user_id": "bob"})])
    await alice.adelete(["1", "2"])
    assert await alice.aget_by_ids(["1", "2"]) == []
    assert [d.page_content for d in await bob.aget_by_ids(["1"])] == ["bob jazz"]
    with pytest.raises(ValueError, match="needs ids"):
        await alice.adelete()


async def test_async_foreign_ids_are_untouched(ainner: VectorStore) -> None:
    await scope_vectorstore(ainner, ALICE).aadd_texts(["secret"], ids=["d"])
    bob = scope_vectorstore(ainner, BOB)
    stored_id = id_prefix(ALICE) + "d"
    assert await bob.aget_by_ids(["d", stored_id]) == []
    await bob.adelete(["d", stored_id])
    assert [d.page_content for d in await ainner.aget_by_ids([stored_id])] == ["secret"]


def test_a_retriever_per_user(inner: VectorStore) -> None:
    scope_vectorstore(inner, BOB).add_texts(["bob's jazz notes"])
    alice = scope_vectorstore(inner, ALICE)
    alice.add_texts(["alice's jazz notes"])
    assert [d.page_content for d in alice.as_retriever().invoke("jazz")] == ["alice's jazz notes"]


# -- stores we cannot scope ----------------------------------------------------------------------


class NoGetByIds(VectorStore):
    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return []

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        return None

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: Any = None, **kwargs: Any
    ) -> NoGetByIds:
        return cls()


class Complete(NoGetByIds):
    def get_by_ids(self, ids: Any, /) -> list[Document]:
        return []


def test_unsupported_stores_say_what_is_missing() -> None:
    with pytest.raises(UnsupportedStore, match=r"get_by_ids\(\)"):
        scope_vectorstore(NoGetByIds(), ALICE)
    with pytest.raises(UnsupportedStore, match="no metadata filter dialect"):
        scope_vectorstore(Complete(), ALICE)
    with pytest.raises(UnsupportedStore, match="not a LangChain VectorStore"):
        scope_vectorstore(object(), ALICE)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedStore, match="scoped already"):
        scope_vectorstore(scope_vectorstore(InMemoryVectorStore(EMBED), BOB), ALICE)
    assert isinstance(UnsupportedStore("x"), TypeError)


def test_register_a_dialect() -> None:
    class Registered(Complete):
        pass

    register_filter_dialect(Registered, NoFilter())
    assert isinstance(scope_vectorstore(Registered(), ALICE), ScopedVectorStore)

    class Sub(InMemoryVectorStore):
        pass

    assert isinstance(scope_vectorstore(Sub(EMBED), ALICE), ScopedVectorStore)
    with pytest.raises(TypeError, match="scope_vectorstore"):
        ScopedVectorStore.from_texts(["x"], EMBED)
