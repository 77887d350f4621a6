"""Hybrid search as each framework asks for it (issue 18), on every backend, both halves:
LlamaIndex ``VectorStoreQueryMode.HYBRID`` / ``TEXT_SEARCH`` on ``MuxiVectorStore``,
LangChain ``MuxiVectorStore.hybrid_search`` and ``as_retriever(search_type="hybrid")``, and
the core ``memories().search(mode=...)``.

The embedding below puts every text about the weather on one axis and anything else on
another: a memory sharing only the query's rare word is never among vector search's top 3,
and hybrid search finds it. Bob, of the same tenant, holds the same rare word and the
query's very vector; he never comes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from muxi_isolation import Backend, Memory, Scope
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.errors import InvalidInput
from muxi_isolation.facade import UserMemories

ALICE = Scope("acme", "alice")
BOB = Scope("acme", "bob")
QUERY = "weather quorvex"


def embed(text: str) -> list[float]:
    return [1.0, 0.0, 0.0] if "weather" in text else [0.0, 0.0, 1.0]


class Topical(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return embed(text)


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(half: str, sync: Any, async_: Any, *args: Any, **kw: Any) -> Any:
    return sync(*args, **kw) if half == "sync" else asyncio.run(async_(*args, **kw))


@pytest.fixture
def store(backend: Backend) -> Backend:
    backend.upsert_memories(
        ALICE,
        [
            Memory(f"w{i}", f"weather today {i}", {"kind": "a"}, [1.0, 0.1 * i, 0.0])
            for i in range(4)
        ]
        + [Memory("rare", "the quorvex valve", {"kind": "a"}, [0.0, 0.0, 1.0])],
    )
    backend.upsert_memories(BOB, [Memory("bob", "quorvex quorvex weather", {}, [1.0, 0.0, 0.0])])
    return backend


def test_llamaindex_hybrid_and_text_search(store: Backend, half: str) -> None:
    vs = li.MuxiVectorStore(store, scope=ALICE)

    def ids(**kw: Any) -> list[str]:
        query = VectorStoreQuery(query_embedding=embed(QUERY), similarity_top_k=3, **kw)
        return list(run(half, vs.query, vs.aquery, query).ids or [])

    assert "rare" not in ids()
    hybrid = ids(mode=VectorStoreQueryMode.HYBRID, query_str=QUERY, alpha=0.5, sparse_top_k=2)
    assert "rare" in hybrid and len(hybrid) == 3 and "bob" not in hybrid
    text_only = ids(mode=VectorStoreQueryMode.TEXT_SEARCH, query_str="QUORVEX")
    assert text_only == ["rare"]
    wide = ids(mode=VectorStoreQueryMode.HYBRID, query_str=QUERY, hybrid_top_k=9)
    assert sorted(wide) == ["rare", "w0", "w1", "w2", "w3"]  # hybrid_top_k: the answer's size
    with pytest.raises(InvalidInput):
        ids(mode=VectorStoreQueryMode.MMR)
    with pytest.raises(InvalidInput):  # hybrid without its text
        ids(mode=VectorStoreQueryMode.HYBRID)


def test_langchain_hybrid_search_and_retriever(store: Backend, half: str) -> None:
    vs = lc.MuxiVectorStore(store, Topical(), scope=ALICE)
    plain = run(half, vs.similarity_search, vs.asimilarity_search, QUERY, 3)
    assert "rare" not in [d.id for d in plain]
    docs = run(half, vs.hybrid_search, vs.ahybrid_search, QUERY, 3)
    assert "rare" in [d.id for d in docs] and len(docs) == 3
    scored = run(half, vs.hybrid_search_with_score, vs.ahybrid_search_with_score, QUERY, 9)
    assert sorted(d.id for d, _ in scored) == ["rare", "w0", "w1", "w2", "w3"]
    none_b = run(half, vs.hybrid_search, vs.ahybrid_search, QUERY, 9, filter={"kind": "b"})
    assert none_b == []
    retriever = vs.as_retriever(search_type="hybrid", search_kwargs={"k": 3, "alpha": 0.0})
    got = run(half, retriever.invoke, retriever.ainvoke, QUERY)
    assert got[0].id == "rare" and len(got) == 3  # alpha 0: the keyword ranking leads


def test_core_memories_search_modes(store: Backend, half: str) -> None:
    mem = UserMemories(store, ALICE, embed)
    vector = [m.id for m, _ in run(half, mem.search, mem.asearch, QUERY, 3)]
    assert "rare" not in vector
    hybrid = [m.id for m, _ in run(half, mem.search, mem.asearch, QUERY, 3, mode="hybrid")]
    assert "rare" in hybrid and "bob" not in hybrid
    no_embedder = UserMemories(store, ALICE)  # text search needs no embedding
    text = run(half, no_embedder.search, no_embedder.asearch, "quorvex", 3, mode="text")
    assert [m.id for m, _ in text] == ["rare"]
    filtered = run(
        half, mem.search, mem.asearch, QUERY, 9, mode="hybrid", filter={"kind": {"$ne": "a"}}
    )
    assert filtered == []
