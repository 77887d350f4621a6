"""Importing vector stores: memories keep their ids, text, metadata and stored vectors.

Real sources: a LangChain ``InMemoryVectorStore`` dump, langchain-postgres ``PGVector`` and
llama-index ``PGVectorStore`` tables. The vectors are those the source stored, never
embedded again (the sources' vectors here are random, so no embedding could reproduce
them), and what was imported is found through both frameworks' vector stores.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_postgres import PGVector
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.postgres import PGVectorStore
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from muxi_isolation import Backend, Scope, UnreadableSource
from muxi_isolation.adapters.langchain import MuxiVectorStore as LCVectorStore
from muxi_isolation.adapters.llamaindex import MuxiVectorStore as LIVectorStore
from muxi_isolation.migrate import run_import
from muxi_isolation.migrate.sources import (
    LangChainInMemoryDump,
    LangChainPGVector,
    LlamaIndexPGVector,
)

DIM = 8
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
CAROL = Scope("tenant_b", "carol")


class RandomEmbeddings(Embeddings):
    """Random unit vectors: an import that re-embedded could never match them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _one(self) -> list[float]:
        v = [self.rng.gauss(0, 1) for _ in range(DIM)]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one() for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one()


class NoEmbeddings(Embeddings):
    """For reading our stores by vector: any call to embed is a failure."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("nothing may be embedded")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("nothing may be embedded")


def close(a: list[float] | None, b: list[float]) -> bool:
    return (
        a is not None
        and len(a) == len(b)
        and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b, strict=True))
    )


DOCS = [
    ("d1", "alice likes jazz", {"user": "tenant_a:alice", "topic": "music"}),
    ("d2", "alice flies Tuesday", {"user": "tenant_a:alice", "topic": "travel", "n": [1, 2]}),
    ("d3", "bob likes chess", {"user": "tenant_a:bob", "topic": "games"}),
    ("d4", "carol's only note", {"user": "tenant_b:carol"}),
    ("d5", "nobody's note", {"topic": "orphan"}),
]


def test_langchain_inmemory_dump(tmp_path: Path, backend: Backend) -> None:
    source = InMemoryVectorStore(RandomEmbeddings(1))
    source.add_documents([Document(t, metadata=m, id=i) for i, t, m in DOCS])
    path = tmp_path / "notes.json"
    source.dump(str(path))
    report = run_import(LangChainInMemoryDump(path, key_field="user"), backend, lambda k: k)
    assert [p.key for p in report.errors] == ["notes / d5"]  # no "user" field: not written
    assert report.to_dict()["scopes"] == {
        "tenant_a:alice": {"memories": 2},
        "tenant_a:bob": {"memories": 1},
        "tenant_b:carol": {"memories": 1},
    }
    stored = {m.id: m for m in backend.list_memories(ALICE)}
    assert set(stored) == {"d1", "d2"}
    for i, t, m in DOCS[:2]:
        assert (stored[i].content, stored[i].metadata) == (t, m)
        assert close(stored[i].embedding, source.store[i]["vector"])
    lc = LCVectorStore(backend, NoEmbeddings(), scope=ALICE)
    hits = lc.similarity_search_by_vector(source.store["d2"]["vector"], k=5)
    assert [d.id for d in hits][:1] == ["d2"] and {d.id for d in hits} == {"d1", "d2"}
    again = run_import(LangChainInMemoryDump(path, key_field="user"), backend, lambda k: k)
    assert again.totals == {} and again.unchanged == 4


def test_one_dump_per_user_is_keyed_by_its_file_name(tmp_path: Path, backend: Backend) -> None:
    source = InMemoryVectorStore(RandomEmbeddings(2))
    source.add_texts(["carol's first", "carol's second"], ids=["c1", "c2"])
    path = tmp_path / "tenant_b__carol.json"
    source.dump(str(path))
    report = run_import(LangChainInMemoryDump(path), backend, "{tenant}__{user}")
    assert report.ok and report.totals == {"memories": 2}
    assert [m.id for m in backend.list_memories(CAROL)] == ["c1", "c2"]


def test_a_scoped_store_dump_comes_back_under_the_callers_ids(
    tmp_path: Path, backend: Backend
) -> None:
    """A store that scope_vectorstore wrapped keeps ids under a per-user prefix and stamps
    metadata; the import gives the memories back their own ids and drops the stamps."""
    from muxi_isolation.adapters.langchain import scope_vectorstore

    inner = InMemoryVectorStore(RandomEmbeddings(3))
    scope_vectorstore(inner, ALICE).add_texts(["alice's note"], ids=["n1"])
    scope_vectorstore(inner, BOB).add_texts(["bob's note"], ids=["n1"])
    path = tmp_path / "shared.json"
    inner.dump(str(path))
    report = run_import(
        LangChainInMemoryDump(path, key_field="muxi_user_id"),
        backend,
        lambda user: f"tenant_a:{user}",
    )
    assert report.ok, report.errors
    for owner, note in ((ALICE, "alice's note"), (BOB, "bob's note")):
        [memory] = backend.list_memories(owner)
        assert (memory.id, memory.content, memory.metadata) == ("n1", note, {})
    lc = LCVectorStore(backend, NoEmbeddings(), scope=ALICE)
    assert [d.page_content for d in lc.get_by_ids(["n1"])] == ["alice's note"]


@pytest.mark.parametrize(
    "content",
    [
        "{",
        "[]",
        '{"x": {"text": "t"}}',
        '{"x": {"text": 1, "vector": [1]}}',
        '{"x": {"text": "t", "vector": [1], "metadata": ["user", "alice"]}}',
    ],
)
def test_a_bad_dump_writes_nothing(tmp_path: Path, backend: Backend, content: str) -> None:
    path = tmp_path / "dump.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UnreadableSource):
        run_import(LangChainInMemoryDump(path), backend, "tenant_a:alice")
    assert backend.list_tenants() == []


def test_vectors_the_target_refuses_are_errors_one_by_one(
    tmp_path: Path, make_backend: Any
) -> None:
    target = make_backend("sqlite", embedding_dimension=DIM)
    path = tmp_path / "dump.json"
    good = {"id": "ok", "text": "fits", "metadata": {}, "vector": [0.5] * DIM}
    bad = {"id": "bad", "text": "too short", "metadata": {}, "vector": [0.5] * 3}
    stamped = {
        "id": "st",
        "text": "x",
        "metadata": {"muxi_user_id": "mallory"},
        "vector": [0.1] * DIM,
    }
    path.write_text(json.dumps({"ok": good, "bad": bad, "st": stamped}), encoding="utf-8")
    report = run_import(LangChainInMemoryDump(path), target, "tenant_a:alice")
    assert {p.key for p in report.errors} == {"dump / bad", "dump / st"}
    assert "another owner" in next(p.reason for p in report.errors if p.key == "dump / st")
    assert [m.id for m in target.list_memories(ALICE)] == ["ok"]


# -- langchain-postgres PGVector --------------------------------------------------------------


def test_langchain_pgvector(source_db: str, sql_url: Any, backend: Backend) -> None:
    engine = create_engine(sql_url(source_db, "psycopg"), poolclass=NullPool)
    embeddings = RandomEmbeddings(3)
    stores = {
        name: PGVector(embeddings, connection=engine, collection_name=name)
        for name in ("alice_notes", "bob_notes", "other")
    }
    stores["alice_notes"].add_documents([Document(t, metadata=m, id=i) for i, t, m in DOCS[:2]])
    stores["bob_notes"].add_documents([Document(DOCS[2][1], metadata=DOCS[2][2], id="d3")])
    stores["other"].add_documents([Document("not imported", id="x1")])
    with engine.connect() as conn:
        vectors = {
            row[0]: json.loads(row[1])
            for row in conn.execute(text("SELECT id, embedding::text FROM langchain_pg_embedding"))
        }
    engine.dispose()

    owners = {"alice_notes": "tenant_a:alice", "bob_notes": "tenant_a:bob"}
    source = LangChainPGVector(source_db, collections=["alice_notes", "bob_notes"])
    report = run_import(source, backend, owners)
    assert report.ok and report.totals == {"memories": 3}
    for user, ids in ((ALICE, ["d1", "d2"]), (BOB, ["d3"])):
        got = {m.id: m for m in backend.list_memories(user)}
        assert sorted(got) == ids
        for i in ids:
            assert close(got[i].embedding, vectors[i])
    assert backend.get_memories(ALICE, ["d1"])[0].metadata == DOCS[0][2]
    # found through LlamaIndex too, by the stored vector
    li = LIVectorStore(backend, ALICE)
    result = li.query(VectorStoreQuery(query_embedding=vectors["d1"], similarity_top_k=1))
    assert result.ids == ["d1"]
    assert result.nodes is not None and result.nodes[0].get_content() == "alice likes jazz"
    assert backend.list_memories(CAROL) == []

    by_field = run_import(LangChainPGVector(source_db, key_field="user"), backend, lambda k: k)
    assert [p.key for p in by_field.errors] == ["other / x1"]  # no "user" field
    assert by_field.unchanged == 3 and by_field.totals == {}

    with pytest.raises(UnreadableSource, match="no_such"):
        run_import(LangChainPGVector(source_db, collections=["no_such"]), backend, owners)


def test_pgvector_tables_missing(source_db: str, backend: Backend) -> None:
    with pytest.raises(UnreadableSource, match="langchain_pg_collection"):
        run_import(LangChainPGVector(source_db), backend, "tenant_a:alice")
    assert backend.list_tenants() == []


# -- llama-index PGVectorStore ---------------------------------------------------------------


def pgvector_store(source_db: str, sql_url: Any) -> PGVectorStore:
    return PGVectorStore(
        engine=create_engine(sql_url(source_db, "psycopg"), poolclass=NullPool),
        async_engine=create_async_engine(sql_url(source_db, "asyncpg"), poolclass=NullPool),
        schema_name="rag",
        table_name="nodes",
        embed_dim=DIM,
        initialization_fail_on_error=True,
    )


def li_nodes(seed: int) -> list[TextNode]:
    emb = RandomEmbeddings(seed)
    nodes = []
    for i, t, m in DOCS[:4]:
        node = TextNode(id_=i, text=t, metadata=dict(m), embedding=emb.embed_query(t))
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc-{i}")
        nodes.append(node)
    return nodes


def test_llamaindex_pgvector_store(source_db: str, sql_url: Any, backend: Backend) -> None:
    store = pgvector_store(source_db, sql_url)
    nodes = li_nodes(4)
    store.add(nodes)
    report = run_import(
        LlamaIndexPGVector(source_db, "nodes", schema="rag", key_field="user"), backend, lambda k: k
    )
    assert report.ok and report.totals == {"memories": 4}
    li = LIVectorStore(backend, ALICE)
    got = {n.node_id: n for n in li.get_nodes(node_ids=["d1", "d2", "d3"])}
    assert sorted(got) == ["d1", "d2"]  # d3 is bob's
    for node in nodes[:2]:
        back = got[node.node_id]
        assert back.get_content() == node.get_content()
        assert back.metadata == node.metadata
        assert back.ref_doc_id == node.ref_doc_id
    by_vector = li.query(VectorStoreQuery(query_embedding=nodes[1].embedding, similarity_top_k=1))
    assert by_vector.ids == ["d2"]
    memory = backend.get_memories(ALICE, ["d2"])[0]
    assert close(memory.embedding, nodes[1].embedding or [])
    lc = LCVectorStore(backend, NoEmbeddings(), scope=BOB)
    assert [d.page_content for d in lc.similarity_search_by_vector(nodes[2].embedding or [])] == [
        "bob likes chess"
    ]


def test_pgvector_store_stamps_are_checked_and_dropped(
    source_db: str, sql_url: Any, backend: Backend
) -> None:
    store = pgvector_store(source_db, sql_url)
    nodes = li_nodes(5)[:2]
    for node in nodes:  # stamped as a ScopedVectorStore stamps what it writes
        node.metadata.update({"muxi_tenant_id": "tenant_a", "muxi_user_id": "alice"})
    store.add(nodes)
    into_alice = run_import(
        LlamaIndexPGVector(source_db, "nodes", schema="rag"), backend, "tenant_a:alice"
    )
    assert into_alice.ok and into_alice.totals == {"memories": 2}
    assert all("muxi_user_id" not in m.metadata for m in backend.list_memories(ALICE))
    into_bob = run_import(
        LlamaIndexPGVector(source_db, "nodes", schema="rag"), backend, "tenant_a:bob"
    )
    assert len(into_bob.errors) == 2 and backend.list_memories(BOB) == []
    assert all("another owner" in p.reason for p in into_bob.errors)


def test_rows_without_an_owner_or_a_node_id_are_one_error_each(
    source_db: str, sql_url: Any, make_backend: Any
) -> None:
    store = pgvector_store(source_db, sql_url)
    store.add(li_nodes(6)[:2])  # d1, d2: alice's
    engine = create_engine(sql_url(source_db, "psycopg"), poolclass=NullPool)
    with engine.begin() as conn:  # rows written by hand, not by PGVectorStore
        conn.execute(
            text(
                "INSERT INTO rag.data_nodes (text, metadata_, node_id, embedding) "
                "SELECT 'plain note', '{\"user\": \"tenant_a:alice\"}'::json, 'plain', embedding "
                "FROM rag.data_nodes WHERE node_id = 'd1' UNION ALL "
                "SELECT 'orphan', '{\"topic\": \"x\"}'::json, 'no-owner', embedding "
                "FROM rag.data_nodes WHERE node_id = 'd1' UNION ALL "
                "SELECT text, metadata_, NULL, embedding FROM rag.data_nodes WHERE node_id = 'd2'"
            )
        )
    engine.dispose()
    target = make_backend("memory")
    source = LlamaIndexPGVector(source_db, "nodes", schema="rag", key_field="user")
    report = run_import(source, target, lambda k: k)
    assert sorted((p.key, p.reason) for p in report.errors) == [
        ("nodes / None", "the row has no node_id"),
        ("nodes / no-owner", "no metadata field 'user'"),
    ]
    assert report.totals == {"memories": 3}
    assert sorted(m.id for m in target.list_memories(ALICE)) == ["d1", "d2", "plain"]
    assert target.get_memories(ALICE, ["plain"])[0].content == "plain note"


def test_pgvector_store_table_missing(source_db: str, backend: Backend) -> None:
    with pytest.raises(UnreadableSource, match="data_nodes"):
        run_import(LlamaIndexPGVector(source_db, "nodes"), backend, "tenant_a:alice")


def test_small_batches_many_owners(tmp_path: Path, make_backend: Any) -> None:
    target = make_backend("sqlite")
    docs = {
        f"solo{i}": {
            "id": f"solo{i}",
            "text": "one",
            "metadata": {"user": f"t:u{i}"},
            "vector": [float(i), 1.0],
        }
        for i in range(25)
    }
    docs |= {
        f"many{i}": {
            "id": f"many{i}",
            "text": "many",
            "metadata": {"user": "t:big"},
            "vector": [1.0, float(i)],
        }
        for i in range(5)
    }
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(docs), encoding="utf-8")
    source = LangChainInMemoryDump(path, key_field="user")
    report = run_import(source, target, lambda k: k, batch=2)
    assert report.ok and report.totals == {"memories": 30} and len(report.scopes) == 26
    assert target.count_memories(Scope("t", "big")) == 5
    assert target.get_memories(Scope("t", "u7"), ["solo7"])[0].embedding == [7.0, 1.0]
    again = run_import(LangChainInMemoryDump(path, key_field="user"), target, lambda k: k, batch=2)
    assert again.unchanged == 30 and again.totals == {}
