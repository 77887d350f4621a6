"""Bad input raises inside the one exception tree, alike on both halves and every backend.

Each row feeds one bad input to an entry point's sync and async halves and names the tree
error it must raise (``InvalidInput`` stays a ``ValueError``, ``UnsupportedStore`` a
``TypeError``). A static check then keeps bare ``ValueError``/``TypeError`` raises out of
the library's source, except the few listed with their reasons.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Awaitable, Callable, Generator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import RemoveMessage
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from muxi_isolation import (
    Backend,
    ConfigError,
    InvalidFilter,
    InvalidInput,
    Isolation,
    IsolationError,
    Memory,
    MemoryBackend,
    Scope,
    SessionManager,
    StorageError,
    UnsupportedStore,
)
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.adapters.langgraph import MuxiCheckpointer, MuxiStore
from muxi_isolation.agent import as_agent, load_agent
from muxi_isolation.filters import Compare
from muxi_isolation.hashing import hashing_vector
from muxi_isolation.http import error_status
from muxi_isolation.migrate import (
    Extra,
    Section,
    Source,
    apurge_expired,
    purge_expired,
    register_section,
    retention_cutoff,
    run_import,
)
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    ItemQuery,
    MatchRule,
    StoreItem,
    decode_namespace,
)
from muxi_isolation.stores.sql._types import UTCDateTime

ALICE = Scope.parse("tenant_a:alice")
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

Call = Callable[[], Any]
ACall = Callable[[], Awaitable[Any]]
BackendFactory = Callable[..., Backend]


class _TooFew(Embeddings):
    """An embedding model that answers with fewer vectors than it was given texts."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return []

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]


def _lc_store(embedding: Embeddings | None = None) -> lc.MuxiVectorStore:
    store = lc.MuxiVectorStore(MemoryBackend(), lc.HashingEmbeddings(dim=8), scope=ALICE)
    store.add_texts(["jazz"])  # something for a search to rank
    if embedding is not None:
        store.embedding = embedding
    return store


def _scoped() -> lc.ScopedVectorStore:
    return lc.scope_vectorstore(InMemoryVectorStore(lc.HashingEmbeddings(dim=8)), ALICE)


def _history() -> lc.MuxiChatMessageHistory:
    backend = MemoryBackend()
    sessions = SessionManager(backend)
    record = sessions.create(ALICE)
    return lc.MuxiChatMessageHistory(backend, ALICE.with_session(record.id), sessions)


def _li_store() -> li.MuxiVectorStore:
    return li.MuxiVectorStore(MemoryBackend(), ALICE)


def _clashing_section() -> Section:
    async def none(backend: Backend, scope: Scope) -> Any:
        return
        yield

    return Section(("memory",), lambda b, s: [], none, lambda b, s, d, dry: {})


MODE_MMR = VectorStoreQuery(query_embedding=[1.0, 0.0], mode=VectorStoreQueryMode.MMR)
NO_EMBEDDING = VectorStoreQuery(query_embedding=None)

# name: (sync half, async half; None where there is no such half, the tree error both raise)
CASES: dict[str, tuple[Call | None, ACall | None, type[IsolationError]]] = {
    "session timeout 0": (lambda: SessionManager(MemoryBackend(), timeout=0), None, InvalidInput),
    "session timeout NaN": (
        lambda: SessionManager(MemoryBackend(), timeout=math.nan),
        None,
        InvalidInput,
    ),
    "session timeout beyond timedelta": (
        lambda: SessionManager(MemoryBackend(), timeout=1e300),
        None,
        InvalidInput,
    ),
    "retention -1": (lambda: retention_cutoff(-1, NOW), None, InvalidInput),
    "retention NaN": (lambda: retention_cutoff(math.nan, NOW), None, InvalidInput),
    "retention before year 1": (lambda: retention_cutoff(1e15, NOW), None, InvalidInput),
    "purge with retention -1": (
        lambda: purge_expired(MemoryBackend(), -1),
        lambda: apurge_expired(MemoryBackend(), -1),
        InvalidInput,
    ),
    "hashing dim 1": (lambda: hashing_vector("x", 1), None, InvalidInput),
    "facade text search without embed": (
        lambda: Isolation(MemoryBackend()).memories("tenant_a:alice").search("text"),
        lambda: Isolation(MemoryBackend()).memories("tenant_a:alice").asearch("text"),
        InvalidInput,
    ),
    "export section taking a core type": (
        lambda: register_section(_clashing_section()),
        None,
        InvalidInput,
    ),
    "agent spec without a colon": (lambda: load_agent("no_colon_here"), None, ConfigError),
    "agent that is not one": (lambda: as_agent(object()), None, ConfigError),
    "timestamp column holding text": (
        lambda: UTCDateTime().process_result_value("x", sqlite.dialect()),
        None,
        StorageError,
    ),
    "stored namespace that is not a list": (lambda: decode_namespace("{}"), None, StorageError),
    "stored namespace that is not JSON": (lambda: decode_namespace("["), None, StorageError),
    # LangChain
    "HashingEmbeddings dim 1": (lambda: lc.HashingEmbeddings(dim=1), None, InvalidInput),
    "add_texts: metadatas count": (
        lambda: _lc_store().add_texts(["a", "b"], [{}]),
        lambda: _lc_store().aadd_texts(["a", "b"], [{}]),
        InvalidInput,
    ),
    "add_texts: ids count": (
        lambda: _lc_store().add_texts(["a", "b"], ids=["1"]),
        lambda: _lc_store().aadd_texts(["a", "b"], ids=["1"]),
        InvalidInput,
    ),
    "add_texts: a text that is not a string": (
        lambda: _lc_store().add_texts([b"bytes"]),
        lambda: _lc_store().aadd_texts([b"bytes"]),
        InvalidInput,
    ),
    "add_texts: the embedding returns too few vectors": (
        lambda: _lc_store(_TooFew()).add_texts(["a"]),
        lambda: _lc_store(_TooFew()).aadd_texts(["a"]),
        InvalidInput,
    ),
    "mmr lambda_mult 2": (
        lambda: _lc_store().max_marginal_relevance_search("jazz", lambda_mult=2.0),
        lambda: _lc_store().amax_marginal_relevance_search("jazz", lambda_mult=2.0),
        InvalidInput,
    ),
    "from_texts without a backend": (
        lambda: lc.MuxiVectorStore.from_texts(["x"], lc.HashingEmbeddings(), scope=ALICE),
        lambda: lc.MuxiVectorStore.afrom_texts(["x"], lc.HashingEmbeddings(), scope=ALICE),
        UnsupportedStore,
    ),
    "ScopedVectorStore.from_texts": (
        lambda: lc.ScopedVectorStore.from_texts(["x"], lc.HashingEmbeddings()),
        lambda: lc.ScopedVectorStore.afrom_texts(["x"], lc.HashingEmbeddings()),
        UnsupportedStore,
    ),
    "scoped add_documents: ids count": (
        lambda: _scoped().add_documents([Document("a")], ids=["1", "2"]),
        lambda: _scoped().aadd_documents([Document("a")], ids=["1", "2"]),
        InvalidInput,
    ),
    "scoped add_texts: metadatas count": (
        lambda: _scoped().add_texts(["a", "b"], metadatas=[{}]),
        lambda: _scoped().aadd_texts(["a", "b"], metadatas=[{}]),
        InvalidInput,
    ),
    "history: not a message": (
        lambda: _history().add_messages(["hello"]),
        lambda: _history().aadd_messages(["hello"]),
        InvalidInput,
    ),
    "history: a RemoveMessage": (
        lambda: _history().add_messages([RemoveMessage(id="m1")]),
        lambda: _history().aadd_messages([RemoveMessage(id="m1")]),
        InvalidInput,
    ),
    # LlamaIndex
    "vector store on something not a Backend": (
        lambda: li.MuxiVectorStore(object(), ALICE),
        None,
        UnsupportedStore,
    ),
    "chat store on something not a Backend": (
        lambda: li.MuxiChatStore(object(), ALICE),
        None,
        UnsupportedStore,
    ),
    "DB chat store on something not a Backend": (
        lambda: li.MuxiDBChatStore(object(), ALICE),
        None,
        UnsupportedStore,
    ),
    "query in MMR mode": (
        lambda: _li_store().query(MODE_MMR),
        lambda: _li_store().aquery(MODE_MMR),
        InvalidInput,
    ),
    "query without an embedding": (
        lambda: _li_store().query(NO_EMBEDDING),
        lambda: _li_store().aquery(NO_EMBEDDING),
        InvalidInput,
    ),
    "chat store: a message index that is not an int": (
        lambda: li.MuxiChatStore(MemoryBackend(), ALICE).delete_message("k", "0"),
        lambda: li.MuxiChatStore(MemoryBackend(), ALICE).adelete_message("k", "0"),
        InvalidInput,
    ),
    "DB chat store: a message index that is not an int": (
        None,
        lambda: li.MuxiDBChatStore(MemoryBackend(), ALICE).delete_message("k", "0"),
        InvalidInput,
    ),
    "chat store: not a ChatMessage": (
        lambda: li.MuxiChatStore(MemoryBackend(), ALICE).add_message("k", "hi"),
        lambda: li.MuxiChatStore(MemoryBackend(), ALICE).async_add_message("k", "hi"),
        InvalidInput,
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_bad_input_raises_a_tree_error_on_both_halves(case: str) -> None:
    sync, asynchronous, expected = CASES[case]
    if sync is not None:
        with pytest.raises(expected) as caught:
            sync()
        assert isinstance(caught.value, IsolationError)
    if asynchronous is not None:
        with pytest.raises(expected) as caught:
            await asynchronous()
        assert isinstance(caught.value, IsolationError)
    if expected is InvalidInput:  # what the HTTP layer answers for it
        assert error_status(caught.value) == (400, "invalid_input")


def _dimension_cases(backend: Backend) -> dict[str, tuple[Call, ACall]]:
    """A 2-dimension query against a stored 3-dimension memory, through each entry point."""
    core = (
        lambda: backend.search_memories(ALICE, [1.0, 0.0]),
        lambda: backend.asearch_memories(ALICE, [1.0, 0.0]),
    )
    mine = Isolation(backend).memories("tenant_a:alice")
    langchain = lc.MuxiVectorStore(backend, lc.HashingEmbeddings(dim=2), scope=ALICE)
    llamaindex = li.MuxiVectorStore(backend, ALICE)
    query = VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=1)
    return {
        "backend": core,
        "facade": (lambda: mine.search([1.0, 0.0]), lambda: mine.asearch([1.0, 0.0])),
        "langchain": (
            lambda: langchain.similarity_search("x"),
            lambda: langchain.asimilarity_search("x"),
        ),
        "llamaindex": (lambda: llamaindex.query(query), lambda: llamaindex.aquery(query)),
    }


async def test_a_query_of_another_dimension_is_invalid_input_on_every_backend(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    backend.upsert_memories(ALICE, [Memory("m", "m", {}, [1.0, 0.0, 0.0])])
    for name, (sync, asynchronous) in _dimension_cases(backend).items():
        with pytest.raises(InvalidInput) as caught:
            sync()
        assert caught.value.field == "embedding", name
        with pytest.raises(InvalidInput) as caught:
            await asynchronous()
        assert caught.value.field == "embedding", name
        if request.node.callspec.params["backend"] == "postgres":  # pgvector's refusal, mapped
            assert isinstance(caught.value.__cause__, DBAPIError), name


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_fixed_dimension_refuses_other_vectors_on_both_halves(
    make_backend: BackendFactory, kind: str
) -> None:
    backend = make_backend(kind, embedding_dimension=3)
    wrong = [Memory("w", "w", {}, [1.0, 0.0])]
    with pytest.raises(
        InvalidInput, match=r"holds 3-dimension embeddings; this (embedding|query) has 2"
    ):
        backend.upsert_memories(ALICE, wrong)
    with pytest.raises(
        InvalidInput, match=r"holds 3-dimension embeddings; this (embedding|query) has 2"
    ):
        await backend.aupsert_memories(ALICE, wrong)
    with pytest.raises(
        InvalidInput, match=r"holds 3-dimension embeddings; this (embedding|query) has 2"
    ):
        backend.search_memories(ALICE, [1.0, 0.0])
    with pytest.raises(
        InvalidInput, match=r"holds 3-dimension embeddings; this (embedding|query) has 2"
    ):
        await backend.asearch_memories(ALICE, [1.0, 0.0])
    assert backend.count_memories(ALICE) == 0


def _item(namespace: tuple[Any, ...] = ("notes",), key: Any = "k", **more: Any) -> StoreItem:
    return StoreItem(namespace, key, more.pop("value", {"n": 1}), NOW, NOW, **more)


async def _drain(agen: Any) -> list[Any]:
    return [x async for x in agen]


def _graph_cases(backend: Backend) -> dict[str, tuple[Call, ACall, type[IsolationError]]]:
    """Bad input to the graph storage and the LangGraph adapters over ``backend``, each with
    its sync and async halves and the tree error both raise before anything is stored."""

    def put(*items: StoreItem) -> tuple[Call, ACall]:
        return (
            lambda: backend.put_items(ALICE, list(items), []),
            lambda: backend.aput_items(ALICE, list(items), []),
        )

    def search(query: ItemQuery) -> tuple[Call, ACall]:
        return (
            lambda: backend.search_items(ALICE, query, now=NOW),
            lambda: backend.asearch_items(ALICE, query, now=NOW),
        )

    def checkpoints(query: CheckpointQuery, delete: bool = False) -> tuple[Call, ACall]:
        if delete:
            return (
                lambda: backend.delete_checkpoints(ALICE, query),
                lambda: backend.adelete_checkpoints(ALICE, query),
            )
        return (
            lambda: backend.get_checkpoints(ALICE, query),
            lambda: backend.aget_checkpoints(ALICE, query),
        )

    saver = MuxiCheckpointer(backend).for_user(ALICE)
    store = MuxiStore(backend).for_user(ALICE)
    indexed = MuxiStore(
        backend, index={"dims": 3, "embed": lc.HashingEmbeddings(dim=8), "fields": ["text"]}
    ).for_user(ALICE)

    def batch(target: MuxiStore, *ops: Any) -> tuple[Call, ACall]:
        return lambda: target.batch(list(ops)), lambda: target.abatch(list(ops))

    ref = ("notes",), "k"
    # trees built by hand: no such operator; a key that would break out of a JSON path
    bad_op, bad_key = Compare("n", "$near", 1), Compare('n"."x', "$eq", 1)
    rule = MatchRule("contains", ("notes",))  # type: ignore[arg-type]
    rows: dict[str, tuple[Call, ACall, type[IsolationError]]] = {
        "namespace without a label": (*put(_item(())), InvalidInput),
        "namespace label empty": (*put(_item(("",))), InvalidInput),
        "namespace label not a string": (*put(_item((1,))), InvalidInput),
        "namespace label with NUL": (*search(ItemQuery(prefix=("a\x00",))), InvalidInput),
        "namespace label with a lone surrogate": (*put(_item(("\ud800",))), InvalidInput),
        "store key not a string": (
            lambda: backend.get_items(ALICE, [(ref[0], 1)], now=NOW),  # type: ignore[list-item]
            lambda: backend.aget_items(ALICE, [(ref[0], 1)], now=NOW),  # type: ignore[list-item]
            InvalidInput,
        ),
        "store value not a dict": (*put(_item(value=["a"])), InvalidInput),
        "embeddings of two dimensions": (
            *put(_item(embeddings={"a": [1.0], "b": [1.0, 0.0]})),
            InvalidInput,
        ),
        "search limit 2**63": (*search(ItemQuery(limit=2**63)), InvalidInput),
        "search offset 2**64": (*search(ItemQuery(offset=2**64)), InvalidInput),
        "search limit -1": (*search(ItemQuery(limit=-1)), InvalidInput),
        "search with a hand-built filter": (*search(ItemQuery(filter=bad_op)), InvalidFilter),
        "search with a hand-built filter key": (
            *search(ItemQuery(filter=bad_key)),
            InvalidFilter,
        ),
        "checkpoints limit 2**63": (*checkpoints(CheckpointQuery(limit=2**63)), InvalidInput),
        "checkpoints with a hand-built filter": (
            *checkpoints(CheckpointQuery(filter=bad_op)),
            InvalidFilter,
        ),
        "checkpoints with a hand-built filter key": (
            *checkpoints(CheckpointQuery(filter=bad_key)),
            InvalidFilter,
        ),
        "delete checkpoints with a limit": (
            *checkpoints(CheckpointQuery("t1", limit=1), delete=True),
            InvalidInput,
        ),
        "delete checkpoints naming nothing": (
            *checkpoints(CheckpointQuery(), delete=True),
            InvalidInput,
        ),
        "prune_threads of one string": (
            lambda: backend.prune_threads(ALICE, "t1", keep_latest=True),
            lambda: backend.aprune_threads(ALICE, "t1", keep_latest=True),
            InvalidInput,
        ),
        "unknown namespace match": (
            lambda: backend.list_namespaces(ALICE, [rule], now=NOW),
            lambda: backend.alist_namespaces(ALICE, [rule], now=NOW),
            InvalidInput,
        ),
        # LangGraph adapters
        "checkpointer: unknown prune strategy": (
            lambda: saver.prune(["t1"], strategy="keep_none"),
            lambda: saver.aprune(["t1"], strategy="keep_none"),
            InvalidInput,
        ),
        "checkpointer: prune of one string": (
            lambda: saver.prune("t1"),
            lambda: saver.aprune("t1"),
            InvalidInput,
        ),
        "checkpointer: delete_for_runs of one string": (
            lambda: saver.delete_for_runs("r1"),
            lambda: saver.adelete_for_runs("r1"),
            InvalidInput,
        ),
        "checkpointer: list limit 2**63": (
            lambda: list(saver.list(None, limit=2**63)),
            lambda: _drain(saver.alist(None, limit=2**63)),
            InvalidInput,
        ),
        "checkpointer: list limit -1 with a filter checked in Python": (
            lambda: list(saver.list(None, filter={"tags": ["a"]}, limit=-1)),
            lambda: _drain(saver.alist(None, filter={"tags": ["a"]}, limit=-1)),
            InvalidInput,
        ),
        "store: unknown operation": (*batch(store, "not an op"), InvalidInput),
        "store: put with an empty label": (*batch(store, PutOp(("",), "k", {})), InvalidInput),
        "store: get with a NUL key": (*batch(store, GetOp(("notes",), "k\x00")), InvalidInput),
        "store: search limit 2**63": (
            *batch(store, SearchOp(("notes",), limit=2**63)),
            InvalidInput,
        ),
        "store: search offset 2**64": (
            *batch(store, SearchOp(("notes",), offset=2**64)),
            InvalidInput,
        ),
        "store: list_namespaces limit -1": (
            *batch(store, ListNamespacesOp(limit=-1)),
            InvalidInput,
        ),
        "store: list_namespaces offset 2**64": (
            *batch(store, ListNamespacesOp(offset=2**64)),
            InvalidInput,
        ),
        "store: embeddings of another dimension than the index": (
            *batch(indexed, PutOp(("notes",), "k", {"text": "jazz"})),
            InvalidInput,
        ),
    }
    return rows


async def test_bad_graph_input_raises_a_tree_error_on_both_halves_and_every_backend(
    backend: Backend,
) -> None:
    wrong = []
    for name, (sync, asynchronous, expected) in _graph_cases(backend).items():
        for half, run in (("sync", sync), ("async", asynchronous)):
            try:
                result = run()
                if half == "async":
                    await result
            except Exception as exc:  # the point is which class it is
                if not isinstance(exc, expected):
                    wrong.append(f"{name} ({half}): {exc!r}")
                elif expected is InvalidInput:  # what the HTTP layer answers for it
                    assert error_status(exc) == (400, "invalid_input"), name
            else:
                wrong.append(f"{name} ({half}): raised nothing")
    assert wrong == []
    assert backend.search_items(ALICE, ItemQuery(), now=NOW) == []
    assert backend.get_checkpoints(ALICE, CheckpointQuery()) == []


async def test_a_search_window_beyond_64_bits_is_invalid_input_on_every_backend(
    backend: Backend,
) -> None:
    backend.put_items(ALICE, [_item()], [])
    for query, field in ((ItemQuery(limit=2**63), "limit"), (ItemQuery(offset=2**64), "offset")):
        with pytest.raises(InvalidInput) as caught:
            backend.search_items(ALICE, query, now=NOW)
        assert caught.value.field == field
        with pytest.raises(InvalidInput) as caught:
            await backend.asearch_items(ALICE, query, now=NOW)
        assert caught.value.field == field
    limit = 2**63 - 1  # the largest that every backend binds
    assert [i.key for i in backend.search_items(ALICE, ItemQuery(limit=limit), now=NOW)] == ["k"]
    found = await backend.asearch_items(ALICE, ItemQuery(offset=limit), now=NOW)
    assert found == []


class _OneRecord(Source):
    """A source holding one record of a type no export section restores."""

    name = "one record"

    def check(self) -> int:
        return 1

    def units(self) -> Generator[Extra, None, None]:
        yield Extra("tenant_a:alice", "crm_note")


def test_an_imported_record_no_section_restores_is_reported_as_invalid_input() -> None:
    report = run_import(_OneRecord(), MemoryBackend(), lambda key: key)
    assert [p.reason for p in report.errors] == [
        "InvalidInput: no section restores 'crm_note' records"
    ]


# -- no bare ValueError / TypeError in the library's source

ROOT = Path(__file__).resolve().parents[1]
BARE = {"ValueError", "TypeError", "OverflowError", "KeyError"}

# (file, exception, message with {} for each f-string field): why it is not a tree error
ALLOWED = {
    (
        "muxi_isolation/config.py",
        "ValueError",
        "muxi-isolation always isolates users; remove user_isolation: false",
    ): "a pydantic validator must raise ValueError; load_config maps it to ConfigError",
    (
        "muxi_isolation/config.py",
        "ValueError",
        "embedding_precision: half is for provider: postgresql (pgvector's halfvec); "
        "SQLite and the in-memory store keep float32 vectors",
    ): "a pydantic validator must raise ValueError; load_config maps it to ConfigError",
    (
        "adapters/langchain/vectorstore.py",
        "ValueError",
        "k and search_kwargs['k'] disagree",
    ): "a pydantic model validator (MuxiRetriever): pydantic wraps it in ValidationError",
    (
        "adapters/langchain/vectorstore.py",
        "TypeError",
        "{}() got unexpected keyword arguments: {}",
    ): "Python's own error for an unexpected keyword argument, as LangChain stores give",
}
# Files whose conversion another change of issue 13 is making; drop each once it lands.
IN_PROGRESS: set[str] = set()


def _message(exc: ast.expr) -> str:
    if isinstance(exc, ast.Call) and exc.args:
        first = exc.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
        if isinstance(first, ast.JoinedStr):
            return "".join(
                str(v.value) if isinstance(v, ast.Constant) else "{}" for v in first.values
            )
    return ""


def bare_raises() -> Iterator[tuple[str, str, str, int]]:
    for folder in ("muxi_isolation", "adapters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Raise) or node.exc is None:
                    continue
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id in BARE:
                    yield rel, target.id, _message(node.exc), node.lineno


def test_no_bare_value_or_type_error_outside_the_allow_list() -> None:
    found = list(bare_raises())
    unlisted = [
        f"{rel}:{line}: raise {name}({message!r})"
        for rel, name, message, line in found
        if (rel, name, message) not in ALLOWED and rel not in IN_PROGRESS
    ]
    assert unlisted == [], "raise a muxi_isolation.errors class instead (or list it, with why)"
    stale = set(ALLOWED) - {(rel, name, message) for rel, name, message, _ in found}
    assert stale == set(), "these allow-list entries no longer match a raise: remove them"
