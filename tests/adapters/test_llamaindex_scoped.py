"""ScopedVectorStore over stores we do not own (SimpleVectorStore, a real PGVectorStore)
and ScopedRetriever over any retriever."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, SummaryIndex, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.postgres import PGVectorStore
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from muxi_isolation import (
    InvalidFilter,
    InvalidIdentifier,
    MissingScope,
    ReservedKey,
    Scope,
    policy,
    use_scope,
)
from muxi_isolation.adapters.llamaindex import (
    HashingEmbedding,
    ScopedRetriever,
    ScopedVectorStore,
    stamp_nodes,
)

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")
DIM = 256
EMBED = HashingEmbedding(dim=DIM)
KINDS = ["simple", "pgvector"]
ATTACK = "x' OR '1'='1"

Inner = Callable[[], BasePydanticVectorStore]


@pytest.fixture
def pgvector_store(request: pytest.FixtureRequest) -> Iterator[Inner]:
    """Fresh llama-index PGVectorStores on the suite's real PostgreSQL, one schema per test."""
    urls = request.getfixturevalue("postgres_urls")
    admin_engine = request.getfixturevalue("postgres_admin")
    base = make_url(urls.admin)
    schema = f"li_{secrets.token_hex(6)}"
    sync = create_engine(base.set(drivername="postgresql+psycopg"), poolclass=NullPool)
    made: list[PGVectorStore] = []

    def make() -> PGVectorStore:
        store = PGVectorStore(
            engine=sync,
            async_engine=create_async_engine(
                base.set(drivername="postgresql+asyncpg"), poolclass=NullPool
            ),
            schema_name=schema,
            table_name="nodes",
            embed_dim=DIM,
            initialization_fail_on_error=True,
        )
        made.append(store)
        return store

    yield make
    sync.dispose()
    with admin_engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def inner(kind: str, request: pytest.FixtureRequest) -> BasePydanticVectorStore:
    """One shared store holding every user's nodes, as an app would have."""
    if kind == "simple":
        return SimpleVectorStore()
    make: Inner = request.getfixturevalue("pgvector_store")
    return make()


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
        node("a1", "jazz piano trio", "albums", genre="jazz", year=1959),
        node("a2", "rock guitar solo", "albums", genre="rock", year=1971),
        node("a3", "jazz saxophone ballad", "notes", genre="jazz", year=1965),
    ]


def bob_nodes() -> list[TextNode]:
    # many jazz nodes: a post-filtered top-k would fill up with Bob's and starve Alice
    return [
        node(f"b{i}", f"jazz jazz piano jazz {i}", "albums", genre="jazz", year=2000 + i)
        for i in range(12)
    ]


def q(text: str = "jazz piano", k: int = 10, **kwargs: Any) -> VectorStoreQuery:
    return VectorStoreQuery(
        query_embedding=EMBED.get_query_embedding(text), similarity_top_k=k, **kwargs
    )


def f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def group(*items: Any, condition: FilterCondition = FilterCondition.AND) -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=condition)


@pytest.fixture
def shared(inner: BasePydanticVectorStore) -> dict[Scope, ScopedVectorStore]:
    scoped = {s: ScopedVectorStore(inner, s) for s in (ALICE, BOB, ALICE_B)}
    scoped[ALICE].add(alice_nodes())
    scoped[BOB].add(bob_nodes())
    return scoped


def stored_ids(store: ScopedVectorStore) -> set[str]:
    return set(store.query(q(k=100)).ids or [])


# -- writes ------------------------------------------------------------------------------


def test_writes_are_stamped_and_the_callers_nodes_left_alone(
    inner: BasePydanticVectorStore,
) -> None:
    nodes = alice_nodes()
    ScopedVectorStore(inner, ALICE).add(nodes)
    assert all("muxi_user_id" not in n.metadata for n in nodes)
    raw = inner.query(q(k=10))
    if raw.nodes is not None:
        metadata = [n.metadata for n in raw.nodes]
    else:
        assert isinstance(inner, SimpleVectorStore)
        metadata = [inner.data.metadata_dict[i] for i in raw.ids or []]
    assert len(metadata) == 3
    assert all(m["muxi_tenant_id"] == "tenant_a" and m["muxi_user_id"] == "alice" for m in metadata)


@pytest.mark.parametrize("key", ["muxi_tenant_id", "muxi_user_id", "muxi_session_id"])
def test_reserved_keys_in_metadata_raise_and_write_nothing(
    inner: BasePydanticVectorStore, key: str
) -> None:
    store = ScopedVectorStore(inner, BOB)
    with pytest.raises(ReservedKey):
        store.add([node("ok", "fine", "d"), node("evil", "mine now", "d", **{key: "alice"})])
    assert stored_ids(store) == set()


@pytest.mark.parametrize("key", ["muxi_user_id", "muxi_tenant_id", "user_id", "tenant_id"])
def test_reserved_keys_in_filters_raise(shared: dict[Scope, ScopedVectorStore], key: str) -> None:
    store = shared[BOB]
    hostile = group(f("genre", "jazz"), f(key, "alice"), condition=FilterCondition.OR)
    with pytest.raises(ReservedKey):
        store.query(q(filters=hostile))
    with pytest.raises(ReservedKey):
        store.delete_nodes(filters=hostile)


# -- reads -------------------------------------------------------------------------------


def test_each_user_sees_only_their_nodes_and_gets_full_top_k(
    shared: dict[Scope, ScopedVectorStore],
) -> None:
    alice = shared[ALICE].query(q("jazz piano", k=2))
    assert alice.ids == ["a1", "a3"]  # Bob's 12 closer matches never crowd her out
    assert set(shared[BOB].query(q(k=3)).ids or []) <= {f"b{i}" for i in range(12)}
    assert len(shared[BOB].query(q(k=3)).ids or []) == 3
    assert shared[ALICE_B].query(q()).ids == []
    assert stored_ids(shared[ALICE]) == {"a1", "a2", "a3"}


def test_a_callers_or_filter_cannot_widen_the_scope(shared: dict[Scope, ScopedVectorStore]) -> None:
    wide = group(f("genre", "jazz"), f("genre", "rock"), condition=FilterCondition.OR)
    assert set(shared[ALICE].query(q(filters=wide)).ids or []) == {"a1", "a2", "a3"}
    assert set(shared[ALICE].query(q(filters=group(f("genre", "rock")))).ids or []) == {"a2"}
    assert shared[ALICE_B].query(q(filters=wide)).ids == []


def test_query_node_ids_never_reach_another_user(
    kind: str, shared: dict[Scope, ScopedVectorStore]
) -> None:
    found = set(shared[ALICE].query(q(node_ids=["a2", "b1", "b2"])).ids or [])
    if kind == "simple":
        assert found == {"a2"}  # the allow-list is intersected with the query's node_ids
    else:
        assert found == {"a1", "a2", "a3"}  # PGVectorStore ignores node_ids in a query
    assert set(shared[ALICE].query(q(node_ids=["b1"])).ids or []) <= {"a1", "a2", "a3"}


def test_returned_nodes_are_stripped_of_stamps(
    kind: str, shared: dict[Scope, ScopedVectorStore]
) -> None:
    result = shared[ALICE].query(q("rock guitar", k=1))
    assert result.ids == ["a2"]
    if kind == "simple":
        assert result.nodes is None  # SimpleVectorStore keeps no text: the docstore does
        with pytest.raises(NotImplementedError):
            shared[ALICE].get_nodes()
        return
    assert result.nodes is not None
    assert result.nodes[0].metadata == {"genre": "rock", "year": 1971}
    assert result.nodes[0].get_content() == "rock guitar solo"
    assert result.nodes[0].ref_doc_id == "albums"
    got = shared[ALICE].get_nodes(node_ids=["a1", "b1"])
    assert [(n.node_id, n.metadata) for n in got] == [("a1", {"genre": "jazz", "year": 1959})]
    assert {n.node_id for n in shared[ALICE].get_nodes()} == {"a1", "a2", "a3"}
    jazz = shared[ALICE].get_nodes(filters=group(f("genre", "jazz")))
    assert {n.node_id for n in jazz} == {"a1", "a3"}


# -- deletes -----------------------------------------------------------------------------


def test_another_users_ids_are_missing_and_nothing_of_theirs_is_deleted(
    shared: dict[Scope, ScopedVectorStore],
) -> None:
    alice, bob, other = shared[ALICE], shared[BOB], shared[ALICE_B]
    bob.delete("notes")  # Alice's document id
    bob.delete_nodes(node_ids=["a1", "a2", "a3"])
    other.delete("albums")
    other.delete_nodes(node_ids=["a1"])
    other.clear()
    assert stored_ids(alice) == {"a1", "a2", "a3"}
    bob.delete("albums")  # a document id both use: only Bob's nodes go
    assert stored_ids(bob) == set()
    assert stored_ids(alice) == {"a1", "a2", "a3"}


def test_deletes_name_something_or_nothing(shared: dict[Scope, ScopedVectorStore]) -> None:
    alice = shared[ALICE]
    alice.delete_nodes()
    alice.delete_nodes(node_ids=[])
    with pytest.raises(InvalidFilter):  # a filter that selects everything
        alice.delete_nodes(filters=MetadataFilters(filters=[]))
    assert stored_ids(alice) == {"a1", "a2", "a3"}
    alice.delete_nodes(node_ids=["a1", "a2"], filters=group(f("genre", "jazz")))
    assert stored_ids(alice) == {"a2", "a3"}
    alice.delete_nodes(filters=group(f("genre", "rock")))
    assert stored_ids(alice) == {"a3"}
    alice.clear()
    assert stored_ids(alice) == set()
    assert len(stored_ids(shared[BOB])) == 12


def test_same_node_id_for_two_users(inner: BasePydanticVectorStore) -> None:
    """Ids are per user in the shared store: neither user's node can replace the other's."""
    alice, bob = ScopedVectorStore(inner, ALICE), ScopedVectorStore(inner, BOB)
    assert alice.add([node("n1", "alice private", "d")]) == ["n1"]
    assert bob.add([node("n1", "bob's own n1", "d")]) == ["n1"]
    assert stored_ids(alice) == stored_ids(bob) == {"n1"}
    if not isinstance(inner, SimpleVectorStore):
        assert [n.get_content() for n in bob.get_nodes(node_ids=["n1"])] == ["bob's own n1"]
    bob.delete_nodes(node_ids=["n1"])
    assert stored_ids(bob) == set()
    assert stored_ids(alice) == {"n1"}
    if not isinstance(inner, SimpleVectorStore):
        assert [n.get_content() for n in alice.get_nodes(node_ids=["n1"])] == ["alice private"]


# -- the PGVectorStore SQL-pasting hazard ------------------------------------------------


def test_pasted_filter_value_really_escapes_a_raw_pgvectorstore(
    pgvector_store: Inner,
) -> None:
    """The hazard is real: ANDing a user filter in front of the attack leaks Bob's nodes."""
    raw = pgvector_store()
    ScopedVectorStore(raw, ALICE).add(alice_nodes())
    ScopedVectorStore(raw, BOB).add(bob_nodes())
    naive = group(f("muxi_user_id", "alice"), f("genre", ATTACK))
    leaked = set(raw.query(q(k=50, filters=naive)).ids or [])
    assert any(i.startswith(policy.foreign_id_prefix(BOB)) for i in leaked)


@pytest.mark.parametrize(
    "hostile",
    [
        group(f("genre", ATTACK)),
        group(f("genre", [ATTACK, "jazz"], FilterOperator.IN)),
        group(f("tags", ATTACK, FilterOperator.CONTAINS)),
        group(f("genre", "x%' OR '1'='1", FilterOperator.TEXT_MATCH)),
        group(f("genre", "jazz"), group(f("year", ATTACK)), condition=FilterCondition.OR),
        group(f("genre') = 'x' OR '1'='1' OR ('", "jazz")),  # the key is pasted too
        group(f("genre", "a :b")),  # a colon could open a SQLAlchemy bind parameter
        # pasted unquoted as a float: "nan" / "inf" are SQL column names, not numbers
        group(f("genre", "nan")),
        group(f("year", "inf", FilterOperator.GT)),
        group(f("year", "-Infinity", FilterOperator.LTE)),
        group(f("year", "1e400", FilterOperator.NE)),
        group(f("year", float("nan"))),
        group(f("year", 10**400)),
        # a list where PGVectorStore pastes one value (its repr, quotes included), and the reverse
        group(f("genre", ["jazz", "rock"])),
        group(f("tags", [" OR 1=1 --"], FilterOperator.CONTAINS)),
        group(f("genre", ["jazz"], FilterOperator.TEXT_MATCH)),
        group(f("year", 1959, FilterOperator.IN)),
    ],
)
def test_pgvector_guard_refuses_unpasteable_filters(
    pgvector_store: Inner, hostile: MetadataFilters
) -> None:
    raw = pgvector_store()
    alice, bob = ScopedVectorStore(raw, ALICE), ScopedVectorStore(raw, BOB)
    alice.add(alice_nodes())
    bob.add(bob_nodes())
    with pytest.raises(InvalidFilter):
        alice.query(q(k=50, filters=hostile))
    with pytest.raises(InvalidFilter):
        alice.get_nodes(filters=hostile)
    with pytest.raises(InvalidFilter):
        alice.delete_nodes(filters=hostile)
    assert len(stored_ids(bob)) == 12


def test_pgvector_attack_without_the_guard_still_leaks_nothing(
    pgvector_store: Inner, caplog: pytest.LogCaptureFixture
) -> None:
    raw = pgvector_store()
    ScopedVectorStore(raw, ALICE).add(alice_nodes())
    ScopedVectorStore(raw, BOB).add(bob_nodes())
    unguarded = ScopedVectorStore(raw, ALICE, paste_guard=False)
    attack = group(f("genre", ATTACK))
    with caplog.at_level(logging.ERROR, logger="muxi_isolation"):
        found = unguarded.query(q(k=50, filters=attack))
        nodes = unguarded.get_nodes(filters=attack)
        unguarded.delete_nodes(filters=attack)  # deletes only what verified as Alice's
    assert set(found.ids or []) == {"a1", "a2", "a3"}  # the attack widened her own filter only
    assert {n.node_id for n in nodes} == {"a1", "a2", "a3"}
    assert "dropped a node from outside" in caplog.text
    assert len(stored_ids(ScopedVectorStore(raw, BOB))) == 12


@pytest.mark.parametrize(("first", "second"), [("1000", "1e3"), ("0", "0.0"), ("7", "07")])
def test_pgvector_numeric_looking_users_stay_apart(
    pgvector_store: Inner, first: str, second: str
) -> None:
    raw = pgvector_store()
    one, two = Scope("tenant_a", first), Scope("tenant_a", second)
    ScopedVectorStore(raw, one).add([node("x", "first user's note", "d")])
    ScopedVectorStore(raw, two).add([node("y", "second user's note", "d")])
    assert stored_ids(ScopedVectorStore(raw, one)) == {"x"}
    assert stored_ids(ScopedVectorStore(raw, two)) == {"y"}


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("user", ["o'brien", "x') OR ('1'='1", "a :b", "back\\slash"])
def test_pgvector_refuses_scope_ids_it_cannot_paste(
    pgvector_store: Inner, guard: bool, user: str
) -> None:
    """A user id comes from a header: pasted, it could widen a delete to every user."""
    raw = pgvector_store()
    ScopedVectorStore(raw, BOB).add(bob_nodes())
    store = ScopedVectorStore(raw, Scope("tenant_a", user), paste_guard=guard)
    for call in (store.clear, lambda: store.query(q()), lambda: store.add(alice_nodes())):
        with pytest.raises(InvalidIdentifier):
            call()
    assert len(stored_ids(ScopedVectorStore(raw, BOB))) == 12


def test_pgvector_document_ids_that_cannot_be_pasted_are_deleted_safely(
    pgvector_store: Inner,
) -> None:
    raw = pgvector_store()
    alice, bob = ScopedVectorStore(raw, ALICE), ScopedVectorStore(raw, BOB)
    alice.add([node("a", "alice", "o'brien.txt"), node("a2", "other", "x")])
    bob.add([node("b", "bob", "o'brien.txt")])
    alice.delete("o'brien.txt")
    assert stored_ids(alice) == {"a2"}
    assert stored_ids(bob) == {"b"}


# -- SimpleVectorStore's own limits (documented) -----------------------------------------


def test_simple_store_keeps_its_flat_filter_limit() -> None:
    store = ScopedVectorStore(SimpleVectorStore(), ALICE)
    store.add(alice_nodes())
    nested = group(f("genre", "jazz"), group(f("year", 1959)))
    with pytest.raises(ValueError, match="Nested"):
        store.query(q(filters=nested))
    flat_or = group(f("year", 1959), f("year", 1971), condition=FilterCondition.OR)
    assert set(store.query(q(filters=flat_or)).ids or []) == {"a1", "a2"}


# -- scope, async, indexes ---------------------------------------------------------------


def test_scope_from_the_context_or_missing(inner: BasePydanticVectorStore) -> None:
    store = ScopedVectorStore(inner)
    with pytest.raises(MissingScope):
        store.add(alice_nodes())
    with pytest.raises(MissingScope):
        store.query(q())
    with use_scope(ALICE):
        store.add(alice_nodes())
        assert stored_ids(store) == {"a1", "a2", "a3"}
    with use_scope(BOB):
        assert stored_ids(store) == set()


async def test_async_twins(inner: BasePydanticVectorStore) -> None:
    alice, bob = ScopedVectorStore(inner, ALICE), ScopedVectorStore(inner, BOB)
    assert await alice.async_add(alice_nodes()) == ["a1", "a2", "a3"]
    await bob.async_add(bob_nodes())
    assert (await alice.aquery(q("rock guitar", k=1))).ids == ["a2"]
    assert (await alice.aquery(q(k=2))).ids == ["a1", "a3"]
    await bob.adelete("notes")
    await bob.adelete_nodes(node_ids=["a1"])
    await alice.adelete_nodes()
    assert {i for i in (await alice.aquery(q(k=50))).ids or []} == {"a1", "a2", "a3"}
    if not isinstance(inner, SimpleVectorStore):
        got = await alice.aget_nodes(filters=group(f("genre", "jazz")))
        assert {n.node_id for n in got} == {"a1", "a3"}
        assert all("muxi_user_id" not in n.metadata for n in got)
    await alice.adelete("notes")
    await alice.adelete_nodes(filters=group(f("genre", "rock")))
    assert (await alice.aquery(q(k=50))).ids == ["a1"]
    await alice.aclear()
    assert (await alice.aquery(q(k=50))).ids == []
    assert len((await bob.aquery(q(k=50))).ids or []) == 12


def _index(inner: BasePydanticVectorStore, scope: Scope) -> VectorStoreIndex:
    scoped = ScopedVectorStore(inner, scope)
    if scoped.stores_text:
        return VectorStoreIndex.from_vector_store(scoped, embed_model=EMBED)
    # a store without text needs a docstore: each user gets their own
    context = StorageContext.from_defaults(vector_store=scoped)
    return VectorStoreIndex([], storage_context=context, embed_model=EMBED)


def test_vector_store_index_per_user(inner: BasePydanticVectorStore) -> None:
    alice, bob = _index(inner, ALICE), _index(inner, BOB)
    alice.insert(Document(text="Alice's passport number is A123.", id_="passport"))
    alice.insert(Document(text="Alice keeps bees.", id_="bees", metadata={"kind": "hobby"}))
    bob.insert(Document(text="Bob's passport number is B999.", id_="passport"))
    found = alice.as_retriever(similarity_top_k=5).retrieve("passport number")
    assert found[0].node.get_content() == "Alice's passport number is A123."
    assert {n.node.ref_doc_id for n in found} == {"passport", "bees"}
    assert all("muxi_user_id" not in n.node.metadata for n in found)
    bobs = bob.as_retriever(similarity_top_k=5).retrieve("passport number")
    assert [n.node.get_content() for n in bobs] == ["Bob's passport number is B999."]
    bob.delete_ref_doc("passport")
    assert bob.as_retriever().retrieve("passport") == []
    assert len(alice.as_retriever(similarity_top_k=5).retrieve("passport")) == 2


# -- ScopedRetriever ---------------------------------------------------------------------


def _shared_docs() -> list[TextNode]:
    return [
        *stamp_nodes(
            ALICE, [node("a1", "alice likes tea", "d"), node("a2", "alice likes jazz", "d")]
        ),
        *stamp_nodes(BOB, [node("b1", "bob likes tea", "d")]),
        *stamp_nodes(ALICE_B, [node("c1", "other tenant alice likes tea", "d")]),
        node("u1", "an unstamped node about tea", "d"),
    ]


def test_scoped_retriever_over_a_summary_index(caplog: pytest.LogCaptureFixture) -> None:
    everyone = SummaryIndex(_shared_docs()).as_retriever()  # returns every node it holds
    alice = ScopedRetriever(everyone, ALICE)
    with caplog.at_level(logging.WARNING, logger="muxi_isolation"):
        found = alice.retrieve("tea")
    assert [n.node.node_id for n in found] == ["a1", "a2"]
    assert all(not any(k.startswith("muxi_") for k in n.node.metadata) for n in found)
    assert caplog.text.count("dropped a node from outside") == 3
    assert [n.node.node_id for n in ScopedRetriever(everyone, BOB).retrieve("tea")] == ["b1"]


async def test_scoped_retriever_over_a_shared_vector_index() -> None:
    index = VectorStoreIndex(_shared_docs(), embed_model=EMBED)
    retriever = index.as_retriever(similarity_top_k=5)
    alice = ScopedRetriever(retriever, ALICE)
    assert {n.node.node_id for n in alice.retrieve("likes tea")} == {"a1", "a2"}
    assert [n.node.node_id for n in await ScopedRetriever(retriever, BOB).aretrieve("tea")] == [
        "b1"
    ]
    contextual = ScopedRetriever(retriever)
    with pytest.raises(MissingScope):
        contextual.retrieve("tea")
    with use_scope(ALICE_B):
        assert [n.node.node_id for n in contextual.retrieve("tea")] == ["c1"]
    assert all(n.score is not None for n in alice.retrieve("tea"))


def test_our_own_stores_are_not_wrapped_again() -> None:
    from muxi_isolation import MemoryBackend
    from muxi_isolation.adapters.llamaindex import MuxiVectorStore

    with pytest.raises(TypeError, match="scoped already"):
        ScopedVectorStore(MuxiVectorStore(MemoryBackend(), ALICE), ALICE)
    with pytest.raises(TypeError, match="scoped already"):
        ScopedVectorStore(ScopedVectorStore(SimpleVectorStore(), ALICE), BOB)
    with pytest.raises(TypeError):
        ScopedVectorStore("not a store", ALICE)  # type: ignore[arg-type]


def test_get_nodes_of_a_simple_store_that_returns_nodes_is_still_verified() -> None:
    """A SimpleVectorStore subclass (or a later llama-index) that does return nodes must
    not hand another user's nodes through the wrapper."""
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import SimpleVectorStore

    from muxi_isolation import Scope, policy
    from muxi_isolation.adapters.llamaindex import ScopedVectorStore

    alice, bob = Scope("t", "alice"), Scope("t", "bob")
    theirs = TextNode(id_="b1", text="bob's", metadata=policy.stamp_metadata(bob, {}))
    mine = TextNode(id_="a1", text="alice's", metadata=policy.stamp_metadata(alice, {}))

    class Listing(SimpleVectorStore):
        def get_nodes(self, node_ids=None, filters=None):  # type: ignore[no-untyped-def]
            return [theirs, mine]

        async def aget_nodes(self, node_ids=None, filters=None):  # type: ignore[no-untyped-def]
            return [theirs, mine]

    store = ScopedVectorStore(Listing(), alice)
    assert [n.node_id for n in store.get_nodes()] == ["a1"]


async def test_aget_nodes_of_a_simple_store_is_verified() -> None:
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import SimpleVectorStore

    from muxi_isolation import Scope, policy
    from muxi_isolation.adapters.llamaindex import ScopedVectorStore

    bob = Scope("t", "bob")
    theirs = TextNode(id_="b1", text="bob's", metadata=policy.stamp_metadata(bob, {}))

    class Listing(SimpleVectorStore):
        async def aget_nodes(self, node_ids=None, filters=None):  # type: ignore[no-untyped-def]
            return [theirs]

    assert await ScopedVectorStore(Listing(), Scope("t", "alice")).aget_nodes() == []
