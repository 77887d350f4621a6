"""Hybrid search per user (issue 18): keyword ranking fused with vector ranking.

On every backend and both halves: a memory that shares only a rare keyword with the query
(its vector points elsewhere) is missed by vector search and found by hybrid search; another
user's memory holding the same keyword never comes back, through either ranking; caller
filters narrow both rankings; the result fills ``min(k, memories matching either)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from muxi_isolation import Backend, IsolationError, Memory, Scope
from muxi_isolation.errors import InvalidInput
from muxi_isolation.stores.sql import SQLBackend, _schema

ALICE = Scope("acme", "alice")
BOB = Scope("acme", "bob")  # same tenant
TWIN = Scope("other", "alice")  # same user id, other tenant
QUERY = [1.0, 0.0, 0.0]
AWAY = [0.0, 0.0, 1.0]  # orthogonal to the query


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def search(backend: Backend, half: str, scope: Any, vector: Any, k: int, **kw: Any) -> list[str]:
    if half == "sync":
        hits = backend.search_memories(scope, vector, k, **kw)
    else:
        hits = asyncio.run(backend.asearch_memories(scope, vector, k, **kw))
    return [m.id for m, _ in hits]


def near(i: int) -> list[float]:
    return [1.0, 0.05 * i, 0.0]


def topical(backend: Backend) -> None:
    """Alice: four memories on the query's topic, one only sharing its rare keyword."""
    backend.upsert_memories(
        ALICE,
        [
            Memory(f"topic{i}", f"weather report number {i}", {"kind": "a"}, near(i))
            for i in range(4)
        ]
        + [Memory("rare", "the quorvex valve was replaced", {"kind": "a"}, AWAY)],
    )


def test_hybrid_finds_the_keyword_match_vector_search_misses(backend: Backend, half: str) -> None:
    topical(backend)
    assert "rare" not in search(backend, half, ALICE, QUERY, 3)
    hybrid = search(backend, half, ALICE, QUERY, 3, text="quorvex report?", mode="hybrid")
    assert "rare" in hybrid and len(hybrid) == 3
    assert search(backend, half, ALICE, None, 3, text="QUORVEX", mode="text") == ["rare"]
    # alpha 1 is the vector ranking alone; 0 puts the keyword match first
    only_vector = search(backend, half, ALICE, QUERY, 3, text="quorvex", mode="hybrid", alpha=1)
    assert only_vector == search(backend, half, ALICE, QUERY, 3)
    keywords_first = search(backend, half, ALICE, QUERY, 3, text="quorvex", mode="hybrid", alpha=0)
    assert keywords_first[0] == "rare"


def test_another_users_keyword_never_comes_back(backend: Backend, half: str) -> None:
    backend.upsert_memories(ALICE, [Memory("mine", "nothing special here", {}, AWAY)])
    for other in (BOB, TWIN):  # the rare word, and the query's very vector
        backend.upsert_memories(other, [Memory("theirs", "zyxquil zyxquil zyxquil", {}, QUERY)])
        backend.upsert_memories(other, [Memory("mine", "zyxquil override", {}, QUERY)])
    assert search(backend, half, ALICE, None, 5, text="zyxquil", mode="text") == []
    hybrid = search(backend, half, ALICE, QUERY, 5, text="zyxquil", mode="hybrid")
    assert hybrid == ["mine"]  # fill: min(k, Alice's matches), and her row's content
    hit = backend.search_memories(ALICE, QUERY, 5, text="zyxquil", mode="hybrid")[0][0]
    assert hit.content == "nothing special here" and hit.scope == ALICE


def test_filters_narrow_both_rankings(backend: Backend, half: str) -> None:
    topical(backend)
    backend.upsert_memories(ALICE, [Memory("rare_b", "quorvex again", {"kind": "b"}, QUERY)])
    both = search(backend, half, ALICE, None, 5, text="quorvex", mode="text")
    assert sorted(both) == ["rare", "rare_b"]
    kw: dict[str, Any] = {"text": "quorvex", "mode": "hybrid"}
    assert search(backend, half, ALICE, QUERY, 9, filter={"kind": "b"}, **kw) == ["rare_b"]
    only_a = search(backend, half, ALICE, QUERY, 9, filter={"kind": "a"}, **kw)
    assert set(only_a) == {"topic0", "topic1", "topic2", "topic3", "rare"}
    text_a = search(
        backend, half, ALICE, None, 9, filter={"kind": "a"}, text="quorvex", mode="text"
    )
    assert text_a == ["rare"]


def test_hybrid_fills_min_k_of_either_match(backend: Backend, half: str) -> None:
    backend.upsert_memories(
        ALICE,
        [
            Memory("v1", "alpha", {}, QUERY),
            Memory("v2", "beta", {}, AWAY),
            Memory("t1", "plinth words", {}, None),  # no vector: found by its words alone
            Memory("x", "unrelated", {}, None),  # neither: never found
        ],
    )
    kw: dict[str, Any] = {"text": "plinth", "mode": "hybrid"}
    assert set(search(backend, half, ALICE, QUERY, 10, **kw)) == {"v1", "v2", "t1"}
    assert len(search(backend, half, ALICE, QUERY, 2, **kw)) == 2
    assert search(backend, half, ALICE, QUERY, 0, **kw) == []


def test_the_text_index_follows_updates_and_deletes(backend: Backend, half: str) -> None:
    backend.upsert_memories(ALICE, [Memory("m", "the vorpal sword", {}, QUERY)])
    backend.upsert_memories(ALICE, [Memory("m", "a blunt spoon", {}, QUERY)])
    assert search(backend, half, ALICE, None, 5, text="vorpal", mode="text") == []
    assert search(backend, half, ALICE, None, 5, text="spoon", mode="text") == ["m"]
    backend.delete_memories(ALICE, ids=["m"])
    assert search(backend, half, ALICE, None, 5, text="spoon", mode="text") == []
    backend.upsert_memories(ALICE, [Memory("n", "spoon again", {}, QUERY)])
    backend.forget_user(ALICE)
    assert search(backend, half, ALICE, None, 5, text="spoon", mode="text") == []


@pytest.mark.parametrize(
    ("vector", "kw"),
    [
        (QUERY, {"mode": "fuzzy", "text": "x"}),
        (QUERY, {"mode": "hybrid"}),  # no text
        (QUERY, {"mode": "hybrid", "text": "?! ..."}),  # no word in it
        (QUERY, {"text": "quorvex"}),  # text in vector mode would be silently ignored
        (None, {"mode": "hybrid", "text": "quorvex"}),  # hybrid needs the vector
        (QUERY, {"mode": "hybrid", "text": "quorvex", "alpha": 1.5}),
        (QUERY, {"mode": "hybrid", "text": "quorvex", "alpha": True}),
        (QUERY, {"mode": "hybrid", "text": "quorvex", "text_k": -1}),
        (QUERY, {"mode": "text", "text": "a\x00b"}),
    ],
)
def test_bad_search_arguments_are_refused_alike(
    backend: Backend, half: str, vector: Any, kw: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        search(backend, half, ALICE, vector, 3, **kw)


def test_hybrid_fails_closed_without_a_scope(backend: Backend, half: str) -> None:
    topical(backend)
    for scope in (None, "acme:alice"):
        with pytest.raises(IsolationError):
            search(backend, half, scope, QUERY, 3, text="quorvex", mode="hybrid")


def test_a_version_5_sqlite_store_gets_its_text_index(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    first = SQLBackend(url, embedding_dimension=None)
    first.upsert_memories(ALICE, [Memory("old", "a grimwald memory", {}, QUERY)])
    first.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # back to version 5: no text index
        for name in ("insert", "delete", "update"):
            conn.execute(text(f"DROP TRIGGER muxi_memories_fts_{name}"))
        conn.execute(text("DROP TABLE muxi_memories_fts"))
        conn.execute(text("UPDATE muxi_schema_version SET version = 5"))
    engine.dispose()
    second = SQLBackend(url, embedding_dimension=None)
    try:
        assert search(second, "sync", ALICE, None, 3, text="grimwald", mode="text") == ["old"]
        with engine.begin() as conn:
            assert _schema.read_version(conn, second.tables) == _schema.SCHEMA_VERSION >= 6
        engine.dispose()
    finally:
        second.close()


def test_forgetting_a_user_leaves_no_word_of_theirs_in_the_sqlite_text_index(
    tmp_path: Any,
) -> None:
    path = tmp_path / "x.db"
    store = SQLBackend(f"sqlite:///{path}", embedding_dimension=None)
    try:
        store.upsert_memories(
            BOB, [Memory(f"b{i}", f"filler number {i}", {}, None) for i in range(50)]
        )
        store.upsert_memories(ALICE, [Memory("m", "zqxjvkword is private", {}, None)])
        store.forget_user(ALICE)
        assert search(store, "sync", BOB, None, 3, text="filler", mode="text")  # still serves
    finally:
        store.close()
    assert b"zqxjvkword" not in path.read_bytes()  # FTS5 only marks a delete: merged away


@pytest.mark.parametrize(
    "query",
    [
        "quorvex' | !valve & (x:*",  # tsquery syntax
        '"quorvex" OR valve* NEAR(a b) ^c -d',  # FTS5 query syntax
        "quorvex'); DROP TABLE muxi_memories; --",
    ],
)
def test_query_syntax_in_the_text_is_just_words(backend: Backend, half: str, query: str) -> None:
    topical(backend)
    assert search(backend, half, ALICE, None, 1, text=query, mode="text") == ["rare"]
    assert len(search(backend, half, ALICE, QUERY, 5, text=query, mode="hybrid")) == 5


def test_the_text_search_config_is_a_backend_option(make_backend: Any, postgres_admin: Any) -> None:
    """``simple`` does not stem: "running" no longer finds "run"."""
    backend = make_backend("postgres", text_search_config="simple")
    backend.upsert_memories(ALICE, [Memory("m", "I run daily", {}, None)])
    assert backend.search_memories(ALICE, None, text="running", mode="text") == []
    assert [m.id for m, _ in backend.search_memories(ALICE, None, text="run", mode="text")] == ["m"]
    schema = backend.tables.metadata.schema
    with postgres_admin.connect() as conn:
        found = conn.scalar(
            text(
                "SELECT indexdef FROM pg_indexes "
                "WHERE schemaname = :s AND indexdef LIKE '%tsvector%'"
            ),
            {"s": schema},
        )
    assert "'simple'" in str(found)
