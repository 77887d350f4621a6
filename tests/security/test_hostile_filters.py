"""Hostile filters and metadata: whatever a caller puts in a filter or in metadata, it is
refused with a typed error or it reads and writes only the caller's own records.

Two users of one tenant (and a namesake in another tenant) hold look-alike records, Bob's
carrying ``owner: bob`` so a filter can name him. Every filter in the tables below goes
through every reader: the core on every backend (list, count, search, delete), LangChain's
``MuxiVectorStore``, ``scope_vectorstore`` over ``InMemoryVectorStore`` and a real
``PGVector``, LlamaIndex's ``MuxiVectorStore`` and ``ScopedVectorStore`` over
``SimpleVectorStore`` and a real ``PGVectorStore``; then through the HTTP body. Native
readers must return exactly the caller's records the filter matches (``filters.matches``
is the reference); wrapped stores, whose filter languages differ, must return only the
caller's records, and exactly them for the plain filters.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from security_profiles import profile, scaled
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from muxi_isolation import (
    Backend,
    Isolation,
    KeyRing,
    Memory,
    Message,
    ReservedKey,
    Scope,
    SessionManager,
    policy,
)
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.errors import InvalidFilter
from muxi_isolation.filters import matches, parse_filter
from muxi_isolation.server import create_app

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")
DIM = 16
LC_EMBED = lc.HashingEmbeddings(DIM)
LI_EMBED = li.HashingEmbedding(dim=DIM)
FAR = 100


def records(owner: str) -> list[tuple[str, dict[str, Any]]]:
    """The same ids and look-alike metadata for everyone; ``owner`` names whose they are."""
    return [
        ("r1", {"genre": "jazz", "year": 1959, "tags": ["piano", "live"], "owner": owner}),
        ("r2", {"genre": "rock", "year": 1971, "tags": ["guitar"], "owner": owner}),
        ("r3", {"genre": "x' OR '1'='1", "year": 2001, "owner": owner}),
        ("r4", {"genre": "100%", "tags": [], "owner": owner, "user": owner}),
        ("r5", {"year": 1959.0, "owner": owner, "note": "a_b"}),
        (f"only_{owner}", {"genre": "jazz", "owner": owner}),
    ]


OWNERS = {ALICE: "alice", BOB: "bob", ALICE_B: "alice_b"}


def own(scope: Scope) -> dict[str, dict[str, Any]]:
    return dict(records(OWNERS[scope]))


# -- the tables ---------------------------------------------------------------------------

REFUSED_RESERVED: list[dict[str, Any]] = [
    {"user_id": "bob"},
    {"tenant_id": "tenant_a"},
    {"session_id": "s1"},
    {"muxi_user_id": "bob"},
    {"muxi_tenant_id": {"$ne": "nobody"}},
    {"muxi_session_id": {"$exists": True}},
    {"$or": [{"genre": "jazz"}, {"user_id": "bob"}]},
    {"$or": [{"genre": "jazz"}, {"muxi_user_id": {"$exists": True}}]},
    {"$or": [{"genre": "jazz"}, {"muxi_tenant_id": {"$in": ["tenant_a", "tenant_b"]}}]},
    {"$not": {"user_id": "alice"}},
    {"$not": {"$not": {"muxi_user_id": "bob"}}},
    {"$and": [{"genre": "jazz"}, {"$or": [{"year": 1}, {"tenant_id": {"$exists": False}}]}]},
    {"user_id": {"$ne": "alice"}},
    {"user_id": {"$in": ["alice", "bob"]}},
    {"genre": "jazz", "muxi_user_id": "bob"},
]
_deep: dict[str, Any] = {"muxi_user_id": "bob"}
for _ in range(15):  # 30 levels: under the dialect's depth limit
    _deep = {"$not": {"$or": [_deep, {"genre": "none"}]}}
REFUSED_RESERVED.append(_deep)

REFUSED_INVALID: list[Any] = [
    {"$where": "1 = 1"},
    {"$expr": {"$eq": [1, 1]}},
    {"genre": {"$regex": ".*"}},
    {"genre": {"$like": "%"}},
    {"genre": {"$ne": {"$gt": ""}}},
    {"genre": {"$in": "jazz"}},
    {"year": {"$gt": None}},
    {"year": {"$gt": float("nan")}},
    {"year": {"$gt": float("inf")}},
    {"$or": []},
    {"$or": "genre"},
    {"$and": [{}]},
    {"": "x"},
    {'genre"': "x"},
    {"gen\\re": "x"},
    {"gen\x00re": "x"},
    {"k" * 129: 1},
    {1: "x"},
    {"genre": {}},
    {"genre": ["jazz"]},
    {"genre": {"jazz": 1}},
    "genre = 'jazz' OR 1=1",
    ["genre", "jazz"],
]
_too_deep: dict[str, Any] = {"genre": "jazz"}
for _ in range(40):
    _too_deep = {"$not": _too_deep}
REFUSED_INVALID.append(_too_deep)

HARMLESS: list[dict[str, Any]] = [
    {"$or": [{"genre": "jazz"}, {"genre": {"$ne": "jazz"}}]},
    {"$not": {"genre": "none"}},
    {"$not": {"$not": {"genre": "jazz"}}},
    {"$or": [{"genre": {"$exists": False}}, {"genre": {"$exists": True}}]},
    {"genre": "x' OR '1'='1"},
    {"genre": "'; DROP TABLE muxi_memories; --"},
    {"genre": {"$text": "%"}},
    {"genre": {"$text": "_"}},
    {"genre": {"$text": "'"}},
    {"note": {"$text": "_"}},
    {"owner": "bob"},
    {"owner": {"$ne": "alice"}},
    {"owner": {"$in": ["alice", "bob", "alice_b"]}},
    {"user": "bob"},
    {"muxi": "x"},
    {"muxi_user": "bob"},
    {"USER_ID": "bob"},
    {"User_Id": {"$exists": False}},
    {"tags": {"$contains": "x' OR 1=1 --"}},
    {"tags": {"$any": ["piano", "guitar"]}},
    {"year": {"$gte": -1e308}},
    {"year": 1959},
    {"genre": {"$gt": ""}},
    {"genre' OR '1'='1": "x"},  # a key is a bound parameter too
    {"$and": [{"genre": "jazz"}, {"$or": [{"owner": "bob"}, {"owner": "alice"}]}]},
]
_nested: dict[str, Any] = {"genre": "jazz"}
for _ in range(20):
    _nested = {"$and": [_nested, {"$or": [{"year": {"$exists": True}}, {"owner": "bob"}]}]}
HARMLESS.append(_nested)


def expected(scope: Scope, spec: dict[str, Any]) -> set[str]:
    node = parse_filter(spec)
    return {rid for rid, meta in own(scope).items() if matches(node, meta)}


def label(value: Any) -> str:
    return repr(value)[:60]


# -- the core, on every backend -------------------------------------------------------------


def fill_core(backend: Backend, *scopes: Scope) -> None:
    for scope in scopes or tuple(OWNERS):
        owner = OWNERS[scope]
        memories = [
            Memory(rid, f"{owner} {rid}", meta, LC_EMBED.embed_query(f"{owner} {rid}"))
            for rid, meta in records(owner)
        ]
        backend.upsert_memories(scope, memories)


def intact(backend: Backend, *scopes: Scope) -> None:
    for scope in scopes:
        assert {m.id: m.metadata for m in backend.list_memories(scope)} == own(scope), scope


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def filled(request: pytest.FixtureRequest, shared_backend: Callable[..., Backend]) -> Backend:
    """One filled store per backend kind for the module; tests that write restore it."""
    backend = shared_backend(request.param)
    fill_core(backend)
    return backend


@pytest.mark.parametrize("spec", REFUSED_RESERVED, ids=label)
def test_core_refuses_filters_naming_the_scope(filled: Backend, spec: Any) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: filled.list_memories(ALICE, filter=spec),
        lambda: filled.count_memories(ALICE, filter=spec),
        lambda: filled.search_memories(ALICE, [1.0] * DIM, 5, filter=spec),
        lambda: filled.delete_memories(ALICE, filter=spec),
    ]
    for call in calls:
        with pytest.raises(ReservedKey):
            call()
    intact(filled, ALICE, BOB, ALICE_B)


@pytest.mark.parametrize("spec", REFUSED_INVALID, ids=label)
def test_core_refuses_malformed_filters(filled: Backend, spec: Any) -> None:
    for call in (
        lambda: filled.list_memories(ALICE, filter=spec),
        lambda: filled.count_memories(ALICE, filter=spec),
        lambda: filled.delete_memories(ALICE, filter=spec),
    ):
        with pytest.raises(InvalidFilter):
            call()
    intact(filled, ALICE, BOB, ALICE_B)


@pytest.mark.parametrize("spec", HARMLESS, ids=label)
def test_core_harmless_filters_read_and_delete_only_the_callers_own(
    filled: Backend, spec: dict[str, Any]
) -> None:
    want = expected(ALICE, spec)
    assert {m.id for m in filled.list_memories(ALICE, filter=spec)} == want
    assert filled.count_memories(ALICE, filter=spec) == len(want)
    hits = filled.search_memories(ALICE, [1.0] * DIM, FAR, filter=spec)
    assert {m.id for m, _ in hits} == want
    if policy._constant(policy.read_filter(spec), True):  # a delete of everything: refused
        with pytest.raises(InvalidFilter, match="must select something"):
            filled.delete_memories(ALICE, filter=spec)
        assert {m.id for m in filled.list_memories(ALICE)} == set(own(ALICE))
        return
    try:
        assert filled.delete_memories(ALICE, filter=spec) == len(want)
        left = {m.id for m in filled.list_memories(ALICE)}
        assert left == set(own(ALICE)) - want
        intact(filled, BOB, ALICE_B)
    finally:
        fill_core(filled, ALICE)


_keys = st.sampled_from(
    [
        "genre",
        "year",
        "tags",
        "owner",
        "user",
        "note",
        "user_id",
        "tenant_id",
        "session_id",
        "muxi_user_id",
        "muxi_tenant_id",
        "muxi_session_id",
        "USER_ID",
        "missing",
    ]
)
_scalars = st.one_of(
    st.sampled_from(["jazz", "rock", "alice", "bob", "alice_b", "x' OR '1'='1", "%", "_", ""]),
    st.integers(-5, 2100),
    st.sampled_from([1959.0, True, False]),
)
_leaf = st.one_of(
    st.builds(lambda k, v: {k: v}, _keys, _scalars),
    st.builds(
        lambda k, op, v: {k: {op: v}},
        _keys,
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$text", "$contains"]),
        _scalars,
    ),
    st.builds(
        lambda k, op, vs: {k: {op: vs}},
        _keys,
        st.sampled_from(["$in", "$nin", "$any", "$all"]),
        st.lists(_scalars, max_size=3),
    ),
    st.builds(lambda k, b: {k: {"$exists": b}}, _keys, st.booleans()),
)
FILTERS = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=8,
)


def test_any_filter_is_refused_or_reads_exactly_the_callers_matches(filled: Backend) -> None:
    """Random filter trees, reserved keys and all: a typed refusal, or exactly the caller's
    own matches (never one of Bob's look-alike records)."""
    backend = filled

    # The @given is inside the test so the store (a fixture) stays out of hypothesis'
    # examples: it is filled once and only read here.
    @profile(max_examples=scaled("filter_examples"))
    @given(spec=FILTERS, who=st.sampled_from([ALICE, BOB, ALICE_B]))
    def check(spec: dict[str, Any], who: Scope) -> None:
        try:
            got = {m.id for m in backend.list_memories(who, filter=spec)}
            counted = backend.count_memories(who, filter=spec)
        except (ReservedKey, InvalidFilter):
            return
        assert got == expected(who, spec)
        assert counted == len(got)

    check()
    intact(backend, ALICE, BOB, ALICE_B)


# -- metadata that tries to set the scope --------------------------------------------------


@pytest.mark.parametrize("key", ["muxi_tenant_id", "muxi_user_id", "muxi_session_id"])
def test_reserved_keys_in_metadata_are_refused_by_every_writer(filled: Backend, key: str) -> None:
    SessionManager(filled).ensure(ALICE, "s1")
    hostile = {key: "bob", "genre": "jazz"}
    writes: list[Callable[[], Any]] = [
        lambda: filled.upsert_memories(ALICE, [Memory("x", "x", hostile)]),
        lambda: filled.append_messages(ALICE.with_session("s1"), [Message("user", "x", hostile)]),
        lambda: lc.MuxiVectorStore(filled, LC_EMBED, scope=ALICE).add_texts(["x"], [hostile]),
        lambda: li.MuxiVectorStore(filled, ALICE).add(
            [TextNode(id_="x", text="x", metadata=hostile, embedding=[1.0] * DIM)]
        ),
        lambda: lc.scope_vectorstore(InMemoryVectorStore(LC_EMBED), ALICE).add_texts(
            ["x"], [hostile]
        ),
        lambda: li.ScopedVectorStore(SimpleVectorStore(), ALICE).add(
            [TextNode(id_="x", text="x", metadata=hostile, embedding=[1.0] * DIM)]
        ),
        lambda: li.MuxiChatStore(filled, ALICE).add_message(
            "s1", li.to_chat_message(Message("user", "x", hostile))
        ),
    ]
    for write in writes:
        with pytest.raises(ReservedKey):
            write()
    intact(filled, ALICE, BOB, ALICE_B)
    assert filled.get_messages(ALICE.with_session("s1")) == []


def test_scope_field_names_in_metadata_are_just_metadata(filled: Backend) -> None:
    """``user_id`` in a record's metadata is data, not identity: it moves nothing."""
    filled.upsert_memories(ALICE, [Memory("claim", "x", {"user_id": "bob", "tenant_id": "b"})])
    try:
        assert "claim" in {m.id for m in filled.list_memories(ALICE)}
        assert "claim" not in {m.id for m in filled.list_memories(BOB)}
        with pytest.raises(ReservedKey):
            filled.list_memories(BOB, filter={"user_id": "bob"})
    finally:
        filled.delete_memories(ALICE, ids=["claim"])


# -- LangChain: the native store and the wrapped ones ----------------------------------------


def lc_fill(store_for: Callable[[Scope], Any]) -> None:
    for scope, owner in OWNERS.items():
        docs = [
            Document(page_content=f"{owner} {rid}", metadata=meta) for rid, meta in records(owner)
        ]
        store_for(scope).add_documents(docs, ids=[rid for rid, _ in records(owner)])


@pytest.fixture(scope="module")
def lc_native(shared_backend: Callable[..., Backend]) -> Any:
    backend = shared_backend("postgres")

    def store_for(scope: Scope) -> Any:
        return lc.MuxiVectorStore(backend, LC_EMBED, scope=scope)

    lc_fill(store_for)
    return store_for


@pytest.fixture(scope="module")
def lc_in_memory() -> Any:
    shared = InMemoryVectorStore(LC_EMBED)

    def store_for(scope: Scope) -> Any:
        return lc.scope_vectorstore(shared, scope)

    lc_fill(store_for)
    return store_for


@pytest.fixture(scope="module")
def lc_pgvector(postgres_urls: Any) -> Iterator[Any]:
    from langchain_postgres import PGVector

    engine = create_engine(make_url(postgres_urls.admin).set(drivername="postgresql+psycopg"))
    shared = PGVector(LC_EMBED, connection=engine, collection_name=f"hf_{uuid.uuid4().hex}")

    def store_for(scope: Scope) -> Any:
        return lc.scope_vectorstore(shared, scope)

    lc_fill(store_for)
    yield store_for
    shared.delete_collection()
    engine.dispose()


@pytest.mark.parametrize("spec", REFUSED_RESERVED, ids=label)
@pytest.mark.parametrize("store", ["lc_native", "lc_in_memory", "lc_pgvector"])
def test_langchain_stores_refuse_filters_naming_the_scope(
    request: pytest.FixtureRequest, store: str, spec: dict[str, Any]
) -> None:
    store_for = request.getfixturevalue(store)
    with pytest.raises(ReservedKey):
        store_for(ALICE).similarity_search("jazz", k=FAR, filter=spec)


PGVECTOR_HOSTILE: list[dict[str, Any]] = [  # PGVector's own dialect: $like, $ilike, $between
    {"genre": {"$like": "%"}},
    {"genre": {"$ilike": "%' OR '1'='1"}},
    {"$or": [{"genre": {"$like": "%"}}, {"genre": {"$nin": ["jazz"]}}]},
    {"$not": {"genre": {"$eq": "none"}}},
    {"$OR": [{"genre": {"$eq": "jazz"}}, {"genre": {"$ne": "jazz"}}]},
    {"year": {"$between": [-1e9, 1e9]}},
    {"owner": {"$eq": "bob"}},
    {"owner": {"$in": ["alice", "bob"]}},
]


OURS_ONLY = {"$text", "$contains", "$any", "$all"}  # operators PGVector does not have
PGVECTOR_ONLY = {"$like", "$ilike", "$between", "$OR"}  # and the reverse


def field_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {k for k in node if not k.startswith("$")}
        for value in node.values():
            found |= field_names(value)
        return found
    if isinstance(node, list):
        return set().union(*(field_names(v) for v in node)) if node else set()
    return set()


def operators(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {k for k in node if k.startswith("$")}
        for value in node.values():
            found |= operators(value)
        return found
    if isinstance(node, list):
        return set().union(*(operators(v) for v in node)) if node else set()
    return set()


@pytest.mark.parametrize("spec", HARMLESS + PGVECTOR_HOSTILE, ids=label)
@pytest.mark.parametrize("store", ["lc_native", "lc_in_memory", "lc_pgvector"])
def test_langchain_stores_return_only_the_callers_documents(
    request: pytest.FixtureRequest, store: str, spec: dict[str, Any], caplog: Any
) -> None:
    store_for = request.getfixturevalue(store)
    foreign_ops = OURS_ONLY if store == "lc_pgvector" else PGVECTOR_ONLY
    odd_names = store == "lc_pgvector" and not all(k.isidentifier() for k in field_names(spec))
    with caplog.at_level(logging.ERROR, logger="muxi_isolation"):
        if operators(spec) & foreign_ops or odd_names:  # a dialect refuses what it lacks
            with pytest.raises((InvalidFilter, ValueError)):
                store_for(ALICE).similarity_search("jazz", k=FAR, filter=spec)
            return
        docs = store_for(ALICE).similarity_search("jazz", k=FAR, filter=spec)
    ids = {d.id for d in docs}
    assert ids <= set(own(ALICE)), ids
    assert all(d.page_content.startswith("alice ") for d in docs)
    if store != "lc_pgvector":  # our dialect: exactly the reference evaluator's answer
        assert ids == expected(ALICE, spec)
    assert "dropped" not in caplog.text  # the scope filter held; verification had nothing to do


def test_langchain_plain_filters_work_on_every_store(
    lc_native: Any, lc_in_memory: Any, lc_pgvector: Any
) -> None:
    for store_for in (lc_native, lc_in_memory, lc_pgvector):
        docs = store_for(ALICE).similarity_search("x", k=FAR, filter={"genre": {"$eq": "jazz"}})
        assert {d.id for d in docs} == {"r1", "only_alice"}
        assert {d.id for d in store_for(BOB).similarity_search("x", k=FAR)} == set(own(BOB))


def test_a_callable_filter_never_sees_another_users_document(lc_in_memory: Any) -> None:
    seen: list[dict[str, Any]] = []

    def spy(doc: Document) -> bool:
        seen.append(dict(doc.metadata))
        return True

    docs = lc_in_memory(ALICE).similarity_search("x", k=FAR, filter=spy)
    assert {d.id for d in docs} == set(own(ALICE))
    assert seen and {m["owner"] for m in seen} == {"alice"}
    assert not any(k.startswith("muxi_") for m in seen for k in m)


# -- LlamaIndex: the native store and the wrapped ones ---------------------------------------


def f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def group(*items: Any, condition: FilterCondition = FilterCondition.AND) -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=condition)


LI_RESERVED = [
    group(f("muxi_user_id", "bob")),
    group(f("user_id", "bob")),
    group(f("tenant_id", "tenant_b")),
    group(f("genre", "jazz"), f("muxi_tenant_id", "tenant_b"), condition=FilterCondition.OR),
    group(
        f("genre", "jazz"),
        group(
            f("year", 1),
            f("muxi_user_id", ["bob"], FilterOperator.IN),
            condition=FilterCondition.OR,
        ),
        condition=FilterCondition.OR,
    ),
    group(f("muxi_user_id", "alice"), condition=FilterCondition.NOT),
    group(f("user_id", "", FilterOperator.IS_EMPTY)),
]
LI_HARMLESS = [
    group(f("genre", "jazz"), f("genre", "rock"), condition=FilterCondition.OR),
    group(f("genre", "none"), condition=FilterCondition.NOT),
    group(f("owner", "bob")),
    group(f("owner", "alice", FilterOperator.NE)),
    group(f("owner", ["alice", "bob"], FilterOperator.IN)),
    group(f("genre", "%", FilterOperator.TEXT_MATCH)),
    group(f("year", 0, FilterOperator.GT)),
    group(f("genre", "", FilterOperator.IS_EMPTY)),
    group(
        f("genre", "jazz"),
        group(f("owner", "bob"), f("owner", "alice_b"), condition=FilterCondition.OR),
    ),
]
LI_QUOTES = [
    group(f("genre", "x' OR '1'='1")),
    group(f("genre", ["x') OR ('1'='1", "jazz"], FilterOperator.IN)),
    group(f("genre", "a :b")),
]


@pytest.fixture(scope="module")
def li_native(shared_backend: Callable[..., Backend]) -> Any:
    backend = shared_backend("postgres")

    def store_for(scope: Scope) -> Any:
        return li.MuxiVectorStore(backend, scope)

    li_fill(store_for)
    return store_for


def li_fill(store_for: Callable[[Scope], Any], *scopes: Scope) -> None:
    for scope in scopes or tuple(OWNERS):
        owner = OWNERS[scope]
        nodes = [
            TextNode(
                id_=rid,
                text=f"{owner} {rid}",
                metadata=meta,
                embedding=LI_EMBED.get_text_embedding(f"{owner} {rid}"),
            )
            for rid, meta in records(owner)
        ]
        store_for(scope).add(nodes)


@pytest.fixture(scope="module")
def li_pgvector(postgres_urls: Any, postgres_admin: Any) -> Iterator[Any]:
    from llama_index.vector_stores.postgres import PGVectorStore

    base = make_url(postgres_urls.admin).set(drivername="postgresql+psycopg")
    engine = create_engine(base, poolclass=NullPool)
    schema = f"hf_{secrets.token_hex(6)}"
    shared = PGVectorStore(
        engine=engine,
        async_engine=create_async_engine(base, poolclass=NullPool),
        schema_name=schema,
        table_name="nodes",
        embed_dim=DIM,
        initialization_fail_on_error=True,
    )

    def store_for(scope: Scope, **options: Any) -> Any:
        return li.ScopedVectorStore(shared, scope, **options)

    li_fill(store_for)
    yield store_for
    engine.dispose()
    with postgres_admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def li_query(store: Any, filters: MetadataFilters | None, **extra: Any) -> set[str]:
    query = VectorStoreQuery(
        query_embedding=LI_EMBED.get_query_embedding("jazz"),
        similarity_top_k=FAR,
        filters=filters,
        **extra,
    )
    result = store.query(query)
    return set(result.ids or [])


@pytest.mark.parametrize("filters", LI_RESERVED, ids=label)
@pytest.mark.parametrize("store", ["li_native", "li_pgvector"])
def test_llamaindex_stores_refuse_filters_naming_the_scope(
    request: pytest.FixtureRequest, store: str, filters: MetadataFilters
) -> None:
    store_for = request.getfixturevalue(store)
    with pytest.raises(ReservedKey):
        li_query(store_for(ALICE), filters)
    with pytest.raises(ReservedKey):
        store_for(ALICE).get_nodes(filters=filters)
    with pytest.raises(ReservedKey):
        store_for(ALICE).delete_nodes(filters=filters)
    assert len(store_for(BOB).get_nodes()) == len(own(BOB))


@pytest.mark.parametrize("filters", LI_HARMLESS + LI_QUOTES, ids=label)
@pytest.mark.parametrize("store", ["li_native", "li_pgvector"])
def test_llamaindex_stores_return_and_delete_only_the_callers_nodes(
    request: pytest.FixtureRequest, store: str, filters: MetadataFilters, caplog: Any
) -> None:
    store_for = request.getfixturevalue(store)
    alice = store_for(ALICE)
    with caplog.at_level(logging.ERROR, logger="muxi_isolation"):
        try:
            found = li_query(alice, filters)
        except (InvalidFilter, ValueError):
            # PGVectorStore: a quote it would paste, or NOT, which it cannot express
            assert store == "li_pgvector", filters
            return
        assert found <= set(own(ALICE)), found
        nodes = alice.get_nodes(filters=filters)
        assert {n.node_id for n in nodes} == found
        assert all(n.get_content().startswith("alice ") for n in nodes)
        try:
            alice.delete_nodes(filters=filters)
            left = {n.node_id for n in store_for(ALICE).get_nodes()}
            assert left == set(own(ALICE)) - found
            for other in (BOB, ALICE_B):
                assert {n.node_id for n in store_for(other).get_nodes()} == set(own(other))
        finally:
            store_for(ALICE).clear()
            li_fill(store_for, ALICE)
    assert "dropped" not in caplog.text


def test_llamaindex_pgvector_without_the_guard_still_leaks_nothing(li_pgvector: Any) -> None:
    """The paste guard off, the quote escapes into PGVectorStore's SQL; verification holds."""
    unguarded = li_pgvector(ALICE, paste_guard=False)
    attack = LI_QUOTES[0]  # genre = 'x' OR '1'='1': the OR escapes the user's filter
    assert li_query(unguarded, attack) == set(own(ALICE))  # all hers, none of Bob's
    assert {n.get_content().split()[0] for n in unguarded.get_nodes(filters=attack)} == {"alice"}
    assert len(li_pgvector(BOB).get_nodes()) == len(own(BOB))


def test_llamaindex_query_ids_never_reach_another_users_nodes(li_native: Any) -> None:
    alice = li_native(ALICE)
    assert li_query(alice, None, node_ids=["only_bob", "only_alice_b"]) == set()
    assert li_query(alice, None, doc_ids=["only_bob"]) == set()
    assert alice.get_nodes(node_ids=["only_bob"]) == []
    try:
        alice.delete_nodes(node_ids=["only_bob", "r1"])
        assert "r1" not in {n.node_id for n in alice.get_nodes()}
        assert {"only_bob", "r1"} <= {n.node_id for n in li_native(BOB).get_nodes()}
    finally:
        li_fill(li_native, ALICE)


def test_llamaindex_simple_store_or_filters_stay_in_scope() -> None:
    shared = SimpleVectorStore()
    for scope, owner in OWNERS.items():
        nodes = [
            TextNode(
                id_=f"{owner}-{rid}",
                text=rid,
                metadata=meta,
                embedding=LI_EMBED.get_text_embedding(f"{owner} {rid}"),
            )
            for rid, meta in records(owner)
        ]
        li.ScopedVectorStore(shared, scope).add(nodes)
    alice = li.ScopedVectorStore(shared, ALICE)
    widening = group(f("owner", "bob"), f("owner", "alice"), condition=FilterCondition.OR)
    assert li_query(alice, widening) == {f"alice-{rid}" for rid, _ in records("alice")}
    assert li_query(alice, group(f("owner", "bob"))) == set()
    with pytest.raises(ReservedKey):
        li_query(alice, group(f("muxi_user_id", "bob")))
    assert li_query(alice, None, node_ids=["bob-r1", "alice-r1"]) == {"alice-r1"}


# -- deletes that select everything ----------------------------------------------------------

# Each filter matches every record (or has nothing in it): a delete with it would wipe the
# user. Pairs: the dict dialect, and a LlamaIndex tree of the same kind.
SELECT_ALL: list[tuple[dict[str, Any], MetadataFilters]] = [
    ({}, MetadataFilters(filters=[])),
    (
        {"$not": {"genre": {"$in": []}}},
        group(f("genre", [], FilterOperator.IN), condition=FilterCondition.NOT),
    ),
    (
        {"$or": [{"genre": {"$exists": True}}, {"genre": {"$exists": False}}]},
        group(f("genre", "jazz"), group(), condition=FilterCondition.OR),
    ),
    (
        {"$or": [{"genre": "jazz"}, {"$not": {"genre": "jazz"}}]},
        group(
            f("genre", "jazz"),
            group(f("genre", "jazz"), condition=FilterCondition.NOT),
            condition=FilterCondition.OR,
        ),
    ),
    ({"$not": {"$and": [{"year": {"$gt": 0}}, {"$not": {"year": {"$gt": 0}}}]}}, group(group())),
]
ALICE_IDS = [rid for rid, _ in records("alice")]


def simple_for_alice() -> Callable[[Scope], Any]:
    shared = SimpleVectorStore()

    def store_for(scope: Scope) -> Any:
        return li.ScopedVectorStore(shared, scope)

    li_fill(store_for, ALICE)
    return store_for


@pytest.mark.parametrize(("spec", "li_spec"), SELECT_ALL, ids=label)
async def test_native_deletes_that_select_everything_are_refused(
    backend: Backend, spec: dict[str, Any], li_spec: MetadataFilters
) -> None:
    fill_core(backend, ALICE)
    lc_alice = lc.MuxiVectorStore(backend, LC_EMBED, scope=ALICE)
    li_alice = li.MuxiVectorStore(backend, ALICE)
    for call in (
        lambda: lc_alice.delete(filter=spec),
        lambda: lc_alice.delete(["r1"], filter=spec),
        lambda: li_alice.delete_nodes(filters=li_spec),
        lambda: li_alice.delete_nodes(node_ids=["r1"], filters=li_spec),
    ):
        with pytest.raises(InvalidFilter):
            call()
    for acall in (
        lambda: lc_alice.adelete(filter=spec),
        lambda: lc_alice.adelete(["r1"], filter=spec),
        lambda: li_alice.adelete_nodes(filters=li_spec),
        lambda: li_alice.adelete_nodes(node_ids=["r1"], filters=li_spec),
    ):
        with pytest.raises(InvalidFilter):
            await acall()
    intact(backend, ALICE)


@pytest.mark.parametrize(("spec", "li_spec"), SELECT_ALL, ids=label)
async def test_wrapped_deletes_that_select_everything_are_refused(
    lc_in_memory: Any,
    lc_pgvector: Any,
    li_pgvector: Any,
    spec: dict[str, Any],
    li_spec: MetadataFilters,
) -> None:
    for lc_for in (lc_in_memory, lc_pgvector):
        alice = lc_for(ALICE)
        for call in (lambda: alice.delete(filter=spec), lambda: alice.delete(["r1"], filter=spec)):
            with pytest.raises(InvalidFilter):
                call()
        for acall in (
            lambda: alice.adelete(filter=spec),
            lambda: alice.adelete(["r1"], filter=spec),
        ):
            with pytest.raises(InvalidFilter):
                await acall()
        assert {d.id for d in alice.get_by_ids(ALICE_IDS)} == set(ALICE_IDS)
    for li_for in (li_pgvector, simple_for_alice()):
        alice = li_for(ALICE)
        for call in (
            lambda: alice.delete_nodes(filters=li_spec),
            lambda: alice.delete_nodes(node_ids=["r1"], filters=li_spec),
        ):
            with pytest.raises(InvalidFilter):
                call()
        for acall in (
            lambda: alice.adelete_nodes(filters=li_spec),
            lambda: alice.adelete_nodes(node_ids=["r1"], filters=li_spec),
        ):
            with pytest.raises(InvalidFilter):
                await acall()
        assert li_query(alice, None) == set(ALICE_IDS)


# -- HTTP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"message": "hi", "metadata": {"muxi_user_id": "bob"}}, "reserved_key"),
        ({"message": "hi", "metadata": {"muxi_tenant_id": "tenant_b"}}, "reserved_key"),
        ({"message": "hi", "user_id": "tenant_a:bob"}, "scope_violation"),
        ({"message": "hi", "tenant_id": "tenant_b"}, "scope_violation"),
        ({"message": "hi", "user_id": "bob", "tenant_id": "tenant_a"}, "scope_violation"),
    ],
)
async def test_http_bodies_cannot_name_the_scope(
    make_backend: Callable[..., Backend], body: dict[str, Any], code: str
) -> None:
    backend = make_backend("sqlite")
    keys = KeyRing()
    key = keys.add_client_key("tenant_a")
    app = create_app(Isolation(backend), keys)
    headers = {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": "tenant_a:alice"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        reply = await c.post("/v1/chat", headers=headers, json=body)
        assert (reply.status_code, reply.json()["error"]) == (400, code)
        for scope in (ALICE, BOB, Scope("tenant_b", "bob")):
            assert backend.list_sessions(scope) == []
