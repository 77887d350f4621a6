"""MuxiVectorStore: LlamaIndex's vector store on the user's memories, on every backend."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from muxi_isolation import (
    Backend,
    InvalidFilter,
    Memory,
    MissingScope,
    ReservedKey,
    Scope,
    use_scope,
)
from muxi_isolation.adapters.llamaindex import HashingEmbedding, MuxiVectorStore

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")
EMBED = HashingEmbedding(dim=64)


def node(node_id: str, text: str, ref_doc: str, **metadata: Any) -> TextNode:
    return TextNode(
        id_=node_id,
        text=text,
        metadata=metadata,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=ref_doc)},
        embedding=EMBED.get_text_embedding(text),
    )


def alice_nodes() -> list[TextNode]:
    return [
        node("a1", "jazz piano trio live", "albums", genre="jazz", year=1959,
             tags=["piano", "live"], title="Kind of Blue", rating=4.5, note="liner notes"),
        node("a2", "rock guitar solo", "albums", genre="rock", year=1971, tags=["guitar"],
             title="Led Zeppelin IV", rating=5, note=None),
        node("a3", "jazz saxophone ballad", "other", genre="jazz", year=1965,
             tags=["sax", "ballad"], title="A Love Supreme", note=""),
        node("a4", "classical symphony", "other", genre="classical", year=1808, tags=[],
             title="Fifth"),
    ]  # fmt: skip


def bob_nodes() -> list[TextNode]:
    return [
        node("a1", "bob jazz piano notes", "albums", genre="jazz", year=2000),  # same id
        node("b1", "bob rock", "bobdoc", genre="rock", year=1990),
    ]


@pytest.fixture
def stores(backend: Backend) -> dict[Scope, MuxiVectorStore]:
    made = {s: MuxiVectorStore(backend, s) for s in (ALICE, BOB, ALICE_B)}
    made[ALICE].add(alice_nodes())
    made[BOB].add(bob_nodes())
    return made


def ids(nodes: Any) -> set[str]:
    return {n.node_id for n in nodes}


def f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def group(*items: Any, condition: FilterCondition = FilterCondition.AND) -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=condition)


FO = FilterOperator
FILTERS: list[tuple[str, MetadataFilters, set[str]]] = [
    ("eq", group(f("genre", "jazz")), {"a1", "a3"}),
    ("ne", group(f("genre", "jazz", FO.NE)), {"a2", "a4"}),
    ("gt", group(f("year", 1960, FO.GT)), {"a2", "a3"}),
    ("gte", group(f("year", 1965, FO.GTE)), {"a2", "a3"}),
    ("lt", group(f("year", 1960, FO.LT)), {"a1", "a4"}),
    ("lte", group(f("year", 1959, FO.LTE)), {"a1", "a4"}),
    ("float", group(f("rating", 4.5)), {"a1"}),
    ("float-gt", group(f("rating", 4.0, FO.GT)), {"a1", "a2"}),
    ("in", group(f("genre", ["rock", "classical"], FO.IN)), {"a2", "a4"}),
    ("nin", group(f("genre", ["rock", "classical"], FO.NIN)), {"a1", "a3"}),
    ("any", group(f("tags", ["piano", "sax"], FO.ANY)), {"a1", "a3"}),
    ("all", group(f("tags", ["sax", "ballad"], FO.ALL)), {"a3"}),
    ("contains", group(f("tags", "guitar", FO.CONTAINS)), {"a2"}),
    ("text-match", group(f("title", "Love", FO.TEXT_MATCH)), {"a3"}),
    ("is-empty", group(f("note", None, FO.IS_EMPTY)), {"a2", "a3", "a4"}),
    ("and", group(f("genre", "jazz"), f("year", 1960, FO.GT)), {"a3"}),
    ("or", group(f("genre", "rock"), f("year", 1808), condition=FilterCondition.OR), {"a2", "a4"}),
    ("not", group(f("genre", "jazz"), condition=FilterCondition.NOT), {"a2", "a4"}),
    (
        "not-none-of",
        group(f("genre", "jazz"), f("genre", "rock"), condition=FilterCondition.NOT),
        {"a4"},
    ),
    (
        "nested-and-or",
        group(
            f("genre", "jazz"),
            group(
                f("year", 1960, FO.LT), f("tags", "sax", FO.CONTAINS), condition=FilterCondition.OR
            ),
        ),
        {"a1", "a3"},
    ),
    (
        "nested-or-and",
        group(
            f("genre", "rock"),
            group(f("genre", "jazz"), f("year", 1960, FO.GT)),
            condition=FilterCondition.OR,
        ),
        {"a2", "a3"},
    ),
    ("ref-doc", group(f("ref_doc_id", "other")), {"a3", "a4"}),
    ("hostile-value", group(f("genre", "x' OR '1'='1")), set()),
    (
        "hostile-or",
        group(f("genre", "x' OR '1'='1"), f("year", 1959), condition=FilterCondition.OR),
        {"a1"},
    ),
]


@pytest.mark.parametrize(("name", "filters", "expected"), FILTERS, ids=[c[0] for c in FILTERS])
def test_filters_compile_for_get_and_query(
    stores: dict[Scope, MuxiVectorStore], name: str, filters: MetadataFilters, expected: set[str]
) -> None:
    store = stores[ALICE]
    assert ids(store.get_nodes(filters=filters)) == expected
    query = VectorStoreQuery(
        query_embedding=EMBED.get_query_embedding("jazz"), similarity_top_k=10, filters=filters
    )
    result = store.query(query)
    assert set(result.ids or []) == expected
    assert ids(result.nodes) == expected


def test_case_insensitive_text_match_is_refused(stores: dict[Scope, MuxiVectorStore]) -> None:
    with pytest.raises(InvalidFilter):
        stores[ALICE].get_nodes(filters=group(f("title", "love", FO.TEXT_MATCH_INSENSITIVE)))


def test_query_ranks_only_this_users_nodes(stores: dict[Scope, MuxiVectorStore]) -> None:
    query = VectorStoreQuery(
        query_embedding=EMBED.get_query_embedding("jazz piano"), similarity_top_k=2
    )
    result = stores[ALICE].query(query)
    assert result.ids is not None and result.ids[0] == "a1"
    assert len(result.ids) == 2
    assert result.nodes is not None and result.nodes[0].get_content() == "jazz piano trio live"
    assert result.similarities is not None and result.similarities[0] >= result.similarities[1]
    bob = stores[BOB].query(query)
    assert bob.ids == ["a1", "b1"]
    assert bob.nodes is not None and bob.nodes[0].get_content() == "bob jazz piano notes"
    assert stores[ALICE_B].query(query).ids == []
    wide = VectorStoreQuery(query_embedding=query.query_embedding, similarity_top_k=50)
    assert len(stores[ALICE].query(wide).ids or []) == 4  # min(k, rows)


def test_node_ids_and_doc_ids(stores: dict[Scope, MuxiVectorStore]) -> None:
    vector = EMBED.get_query_embedding("jazz")
    every = VectorStoreQuery(query_embedding=vector, similarity_top_k=10, node_ids=[])
    assert set(stores[ALICE].query(every).ids or []) == {"a1", "a2", "a3", "a4"}
    some = VectorStoreQuery(
        query_embedding=vector, similarity_top_k=10, node_ids=["a2", "a3", "b1"]
    )
    assert set(stores[ALICE].query(some).ids or []) == {"a2", "a3"}
    docs = VectorStoreQuery(query_embedding=vector, similarity_top_k=10, doc_ids=["albums"])
    assert set(stores[ALICE].query(docs).ids or []) == {"a1", "a2"}
    assert set(stores[BOB].query(docs).ids or []) == {"a1"}
    both = VectorStoreQuery(
        query_embedding=vector, similarity_top_k=10, doc_ids=["albums"], node_ids=["a2"]
    )
    assert stores[ALICE].query(both).ids == ["a2"]
    assert ids(stores[ALICE].get_nodes(node_ids=["a1", "b1"])) == {"a1"}
    assert ids(
        stores[ALICE].get_nodes(node_ids=["a1", "a2"], filters=group(f("genre", "rock")))
    ) == {"a2"}
    assert ids(stores[ALICE].get_nodes()) == {"a1", "a2", "a3", "a4"}


def test_nodes_round_trip_exactly(backend: Backend) -> None:
    store = MuxiVectorStore(backend, ALICE)
    original = node("n", "text", "doc", genre="x", nested={"a": [1, 2]})
    original.excluded_llm_metadata_keys = ["nested"]
    original.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id="n2")
    document = Document(text="a whole document", metadata={"k": 1}, id_="doc")
    document.embedding = EMBED.get_text_embedding("a whole document")
    store.add([original, document])
    got = {n.node_id: n for n in store.get_nodes(node_ids=["n", "doc"])}
    assert type(got["doc"]) is Document
    for stored, sent in ((got["n"], original), (got["doc"], document)):
        # vectors are float32 in SQL (as in pgvector): equal to float32 precision
        assert stored.embedding == pytest.approx(sent.embedding, rel=1e-6)
        assert stored.model_dump(exclude={"embedding"}) == sent.model_dump(exclude={"embedding"})
    assert got["n"].ref_doc_id == "doc"


def test_memories_written_elsewhere_read_as_text_nodes(backend: Backend) -> None:
    backend.upsert_memories(ALICE, [Memory("m1", "from the facade", {"topic": "x"}, [1.0] * 64)])
    [found] = MuxiVectorStore(backend, ALICE).get_nodes(node_ids=["m1"])
    assert isinstance(found, TextNode)
    assert (found.node_id, found.text, found.metadata) == ("m1", "from the facade", {"topic": "x"})


def test_reserved_keys_raise_and_write_nothing(backend: Backend) -> None:
    store = MuxiVectorStore(backend, ALICE)
    good = node("ok", "fine", "d", genre="x")
    for key in ("muxi_user_id", "muxi_tenant_id", "muxi_session_id"):
        bad = node("bad", "evil", "d", **{key: "bob"})
        with pytest.raises(ReservedKey):
            store.add([good, bad])
        with pytest.raises(ReservedKey):
            store.get_nodes(filters=group(f(key, "bob")))
        with pytest.raises(ReservedKey):
            store.query(VectorStoreQuery(query_embedding=[1.0] * 64, filters=group(f(key, "x"))))
        with pytest.raises(ReservedKey):
            store.delete_nodes(filters=group(f(key, "x")))
    for key in ("user_id", "tenant_id"):
        with pytest.raises(ReservedKey):
            store.get_nodes(
                filters=group(f("genre", "x"), group(f(key, "bob")), condition=FilterCondition.OR)
            )
    assert store.get_nodes() == []


def test_another_users_ids_are_missing_and_nothing_of_theirs_is_deleted(
    stores: dict[Scope, MuxiVectorStore],
) -> None:
    alice, bob, other_tenant = stores[ALICE], stores[BOB], stores[ALICE_B]
    assert bob.get_nodes(node_ids=["a2", "a3"]) == []
    bob.delete("other")  # Alice's document id
    bob.delete_nodes(node_ids=["a2", "a3", "a4"])
    other_tenant.delete("albums")
    other_tenant.delete_nodes(node_ids=["a1", "a2"])
    other_tenant.clear()
    bob.delete("albums")  # Bob's own nodes of an id Alice also uses
    assert ids(alice.get_nodes()) == {"a1", "a2", "a3", "a4"}
    assert ids(bob.get_nodes()) == {"b1"}
    bob.clear()
    assert bob.get_nodes() == []
    assert ids(alice.get_nodes()) == {"a1", "a2", "a3", "a4"}


def test_deletes(stores: dict[Scope, MuxiVectorStore]) -> None:
    alice = stores[ALICE]
    alice.delete_nodes()  # names nothing: deletes nothing
    alice.delete_nodes(node_ids=[])
    with pytest.raises(InvalidFilter):  # a filter that selects everything
        alice.delete_nodes(filters=MetadataFilters(filters=[]))
    assert len(alice.get_nodes()) == 4
    alice.delete_nodes(node_ids=["a1", "a2"], filters=group(f("genre", "jazz")))
    assert ids(alice.get_nodes()) == {"a2", "a3", "a4"}
    alice.delete("other")
    assert ids(alice.get_nodes()) == {"a2"}
    alice.clear()
    assert alice.get_nodes() == []
    assert ids(stores[BOB].get_nodes()) == {"a1", "b1"}


async def test_async_twins(backend: Backend) -> None:
    alice, bob = MuxiVectorStore(backend, ALICE), MuxiVectorStore(backend, BOB)
    assert await alice.async_add(alice_nodes()) == ["a1", "a2", "a3", "a4"]
    await bob.async_add(bob_nodes())
    query = VectorStoreQuery(
        query_embedding=EMBED.get_query_embedding("rock guitar"),
        similarity_top_k=1,
        filters=group(f("year", 1900, FO.GT)),
    )
    assert (await alice.aquery(query)).ids == ["a2"]
    assert ids(await alice.aget_nodes(node_ids=["a1", "b1"])) == {"a1"}
    assert ids(await alice.aget_nodes(filters=group(f("genre", "jazz")))) == {"a1", "a3"}
    await bob.adelete("other")
    await bob.adelete_nodes(node_ids=["a2"])
    await alice.adelete_nodes()
    assert len(await alice.aget_nodes()) == 4
    await alice.adelete("albums")
    await alice.adelete_nodes(filters=group(f("genre", "classical")))
    assert ids(await alice.aget_nodes()) == {"a3"}
    await alice.aclear()
    assert await alice.aget_nodes() == []
    assert ids(await bob.aget_nodes()) == {"a1", "b1"}


def test_scope_from_the_context_or_missing(backend: Backend) -> None:
    store = MuxiVectorStore(backend)
    with pytest.raises(MissingScope):
        store.get_nodes()
    with pytest.raises(MissingScope):
        store.add(alice_nodes())
    with use_scope(ALICE):
        store.add(alice_nodes())
    with use_scope(BOB):
        assert store.get_nodes() == []
    assert len(MuxiVectorStore(backend, ALICE).get_nodes()) == 4


def test_query_needs_the_default_mode_and_an_embedding(
    stores: dict[Scope, MuxiVectorStore],
) -> None:
    with pytest.raises(ValueError, match="mode"):
        stores[ALICE].query(
            VectorStoreQuery(query_embedding=[1.0] * 64, mode=VectorStoreQueryMode.MMR)
        )
    with pytest.raises(ValueError, match="embedding"):
        stores[ALICE].query(VectorStoreQuery(query_str="jazz"))


def test_vector_store_index_per_user(backend: Backend) -> None:
    def index(scope: Scope) -> VectorStoreIndex:
        return VectorStoreIndex.from_vector_store(
            MuxiVectorStore(backend, scope), embed_model=EMBED
        )

    alice, bob = index(ALICE), index(BOB)
    alice.insert(
        Document(text="Alice keeps bees in the garden.", id_="bees", metadata={"kind": "hobby"})
    )
    alice.insert(Document(text="Alice's passport number is A123.", id_="secret"))
    bob.insert(Document(text="Bob keeps bees too, on the roof.", id_="bees"))
    found = alice.as_retriever(similarity_top_k=5).retrieve("who keeps bees?")
    assert {n.node.ref_doc_id for n in found} == {"bees", "secret"}
    top = found[0]
    assert top.node.ref_doc_id == "bees" and top.node.metadata == {"kind": "hobby"}
    assert "Alice keeps bees" in top.node.get_content()
    assert top.score is not None
    bobs = bob.as_retriever(similarity_top_k=5).retrieve("passport number")
    assert [n.node.get_content() for n in bobs] == ["Bob keeps bees too, on the roof."]
    filtered = alice.as_retriever(filters=group(f("kind", "hobby"))).retrieve("passport")
    assert [n.node.ref_doc_id for n in filtered] == ["bees"]
    alice.delete_ref_doc("bees")
    assert [n.node.ref_doc_id for n in alice.as_retriever().retrieve("bees")] == ["secret"]
    assert [n.node.ref_doc_id for n in bob.as_retriever().retrieve("bees")] == ["bees"]


async def test_vector_store_index_async(backend: Backend) -> None:
    index = VectorStoreIndex.from_vector_store(MuxiVectorStore(backend, ALICE), embed_model=EMBED)
    await index.ainsert(Document(text="async documents work", id_="d"))
    found = await index.as_retriever().aretrieve("async")
    assert [n.node.ref_doc_id for n in found] == ["d"]
    await index.adelete_ref_doc("d")
    assert await index.as_retriever().aretrieve("async") == []


def test_session_id_metadata_stays_filterable(backend: Backend) -> None:
    """LlamaIndex's Memory tags flushed messages with session_id and filters on it."""
    store = MuxiVectorStore(backend, ALICE)
    store.add(
        [node("s1", "one", "d", session_id="sess_1"), node("s2", "two", "d", session_id="sess_2")]
    )
    assert ids(store.get_nodes(filters=group(f("session_id", "sess_2")))) == {"s2"}
    query = VectorStoreQuery(
        query_embedding=[1.0] * 64, similarity_top_k=5, filters=group(f("session_id", "sess_1"))
    )
    assert store.query(query).ids == ["s1"]
    assert store.get_nodes(node_ids=["s1"])[0].metadata == {"session_id": "sess_1"}
