"""Two users write the same id into one wrapped store at the same moment.

The wrapped store is paused between the wrapper's ownership check and its own write until
both writers have arrived (a ``threading.Barrier`` in a subclass's add), so both checks run
before either write: the interleaving that let Bob's content land under Alice's stamp. Ids
are per user in every wrapped store, so the two writes cannot meet: each user keeps exactly
their own record, sync and async, in LlamaIndex's ``ScopedVectorStore`` (SimpleVectorStore,
PGVectorStore) and LangChain's ``scope_vectorstore`` (InMemoryVectorStore, PGVector).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.postgres import PGVectorStore
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from muxi_isolation import Scope, policy
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import llamaindex as li

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
CAROL = Scope("tenant_a", "carol")
TEXTS = {ALICE: "alice's secret", BOB: "bob's overwrite", CAROL: "carol's"}
DIM = 32
LI_EMBED = li.HashingEmbedding(dim=DIM)
LC_EMBED = lc.HashingEmbeddings(DIM)

_gate = threading.local()
_barrier = threading.Barrier(2, timeout=20)


def meet() -> None:
    """Wait, once per writer, until the other writer has passed its check too."""
    if not getattr(_gate, "met", False):
        _gate.met = True
        _barrier.wait()


def both(write: Callable[[Scope], list[str]]) -> dict[Scope, list[str]]:
    """Run ``write`` for Alice and Bob in two threads that meet inside the store."""
    _barrier.reset()
    results: dict[Scope, Any] = {}

    def run(scope: Scope) -> None:
        _gate.met = False
        try:
            results[scope] = write(scope)
        except Exception as exc:  # reported below, with the other writer's outcome
            results[scope] = exc

    threads = [threading.Thread(target=run, args=(s,)) for s in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


# -- LlamaIndex ---------------------------------------------------------------------------


class PausingSimple(SimpleVectorStore):
    def add(self, nodes: Any, **kwargs: Any) -> list[str]:
        meet()
        return super().add(nodes, **kwargs)


class PausingPG(PGVectorStore):
    def add(self, nodes: Any, **kwargs: Any) -> list[str]:
        meet()
        return super().add(nodes, **kwargs)

    async def async_add(self, nodes: Any, **kwargs: Any) -> list[str]:
        meet()
        return await super().async_add(nodes, **kwargs)


@pytest.fixture(params=["simple", "pgvector"])
def li_inner(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """The shared store; for PostgreSQL a new client of one table per call, as two workers
    would have (an async engine is not shared across the writers' event loops)."""
    if request.param == "simple":
        shared = PausingSimple()
        yield lambda: shared
        return
    urls = request.getfixturevalue("postgres_urls")
    admin = request.getfixturevalue("postgres_admin")
    base = make_url(urls.admin)
    schema = f"race_{secrets.token_hex(6)}"
    engines: list[Any] = []

    def make() -> PausingPG:
        engines.append(create_engine(base.set(drivername="postgresql+psycopg"), poolclass=NullPool))
        return PausingPG(
            engine=engines[-1],
            async_engine=create_async_engine(
                base.set(drivername="postgresql+asyncpg"), poolclass=NullPool
            ),
            schema_name=schema,
            table_name="nodes",
            embed_dim=DIM,
            initialization_fail_on_error=True,
        )

    yield make
    for engine in engines:
        engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def li_node(scope: Scope) -> TextNode:
    return TextNode(id_="X", text=TEXTS[scope], embedding=LI_EMBED.get_text_embedding(TEXTS[scope]))


@pytest.mark.parametrize("half", ["sync", "async"])
def test_llamaindex_same_id_at_once_keeps_both_owners(
    li_inner: Callable[[], Any], half: str
) -> None:
    _gate.met = True  # a third user's write creates PGVectorStore's table before the race
    li.ScopedVectorStore(li_inner(), CAROL).add([li_node(CAROL)])
    stores = {s: li.ScopedVectorStore(li_inner(), s) for s in (ALICE, BOB)}

    def write(scope: Scope) -> list[str]:
        if half == "sync":
            return stores[scope].add([li_node(scope)])
        return asyncio.run(stores[scope].async_add([li_node(scope)]))

    assert both(write) == {ALICE: ["X"], BOB: ["X"]}
    for scope, store in stores.items():
        query = VectorStoreQuery(
            query_embedding=LI_EMBED.get_query_embedding(TEXTS[scope]), similarity_top_k=5
        )
        found = store.query(query)
        assert found.ids == ["X"], scope
        if found.nodes is not None:
            assert [n.get_content() for n in found.nodes] == [TEXTS[scope]]
    inner = stores[ALICE].store
    if isinstance(inner, SimpleVectorStore):  # it keeps no text: check each embedding's stamp
        data = inner.data
        owners = {s.user_id: s for s in TEXTS}
        for sid, metadata in data.metadata_dict.items():
            writer = owners[metadata[policy.USER_KEY]]
            assert data.embedding_dict[sid] == LI_EMBED.get_text_embedding(TEXTS[writer])


# -- LangChain ----------------------------------------------------------------------------


class PausingInMemory(InMemoryVectorStore):
    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        meet()
        return super().add_documents(documents, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        meet()
        return await super().aadd_documents(documents, **kwargs)


@pytest.fixture
def lc_inner(request: pytest.FixtureRequest, lc_kind: str) -> Iterator[Any]:
    if lc_kind == "in_memory":
        yield PausingInMemory(LC_EMBED)
        return
    from langchain_postgres import PGVector

    class PausingPGVector(PGVector):
        def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
            meet()
            return super().add_documents(documents, **kwargs)

    url = make_url(request.getfixturevalue("postgres_urls").admin)
    engine = create_engine(url.set(drivername="postgresql+psycopg"), poolclass=NullPool)
    store = PausingPGVector(LC_EMBED, connection=engine, collection_name=f"c_{uuid.uuid4().hex}")
    yield store
    store.delete_collection()
    engine.dispose()


# PGVector's async half needs an async engine of its own; its sync half runs the race
@pytest.mark.parametrize(
    ("lc_kind", "half"), [("in_memory", "sync"), ("in_memory", "async"), ("pgvector", "sync")]
)
def test_langchain_same_id_at_once_keeps_both_owners(lc_inner: Any, half: str) -> None:
    stores = {s: lc.scope_vectorstore(lc_inner, s) for s in (ALICE, BOB)}

    def write(scope: Scope) -> list[str]:
        doc = Document(page_content=TEXTS[scope])
        if half == "sync":
            return stores[scope].add_documents([doc], ids=["X"])
        return asyncio.run(stores[scope].aadd_documents([doc], ids=["X"]))

    assert both(write) == {ALICE: ["X"], BOB: ["X"]}
    for scope, store in stores.items():
        assert [d.page_content for d in store.get_by_ids(["X"])] == [TEXTS[scope]]
