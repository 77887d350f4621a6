"""One set of rules for stores we do not own (muxi_isolation.policy_foreign), the same in
LangChain's and LlamaIndex's wrappers, on both halves, and in policy.verify: one logger for
what verification drops, one answer to an id that holds someone else's record."""

from __future__ import annotations

import logging

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import SummaryIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore

from muxi_isolation import Scope, ScopeViolation
from muxi_isolation import policy_foreign as foreign
from muxi_isolation.adapters.langchain import HashingEmbeddings, scope_vectorstore
from muxi_isolation.adapters.llamaindex import ScopedRetriever, ScopedVectorStore, stamp_nodes

ALICE, BOB = Scope("t", "alice"), Scope("t", "bob")
TAKEN = "an id in this write holds a record not stamped for this scope"


def dropped_by(caplog: pytest.LogCaptureFixture) -> set[str]:
    return {r.name for r in caplog.records if "dropped a" in r.getMessage()}


def planted_langchain() -> InMemoryVectorStore:
    """A shared store holding, under alice's id for "p1", a document stamped for bob."""
    inner = InMemoryVectorStore(HashingEmbeddings(dim=8))
    metadata = foreign.stamp(BOB, {})
    inner.add_documents(
        [Document("bob's", metadata=metadata)], ids=[foreign.stored_id(ALICE, "p1")]
    )
    return inner


@pytest.mark.parametrize("half", ["sync", "async"])
async def test_langchain_drops_through_the_policy_logger(
    half: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice = scope_vectorstore(planted_langchain(), ALICE)
    with caplog.at_level(logging.ERROR, logger="muxi_isolation"):
        found = alice.get_by_ids(["p1"]) if half == "sync" else await alice.aget_by_ids(["p1"])
    assert found == []
    assert dropped_by(caplog) == {"muxi_isolation.policy"}


def test_llamaindex_drops_through_the_policy_logger(caplog: pytest.LogCaptureFixture) -> None:
    nodes = [*stamp_nodes(BOB, [TextNode(id_="b1", text="tea")]), TextNode(id_="u", text="tea")]
    alice = ScopedRetriever(SummaryIndex(nodes).as_retriever(), ALICE)
    with caplog.at_level(logging.WARNING, logger="muxi_isolation"):
        assert alice.retrieve("tea") == []
    assert dropped_by(caplog) == {"muxi_isolation.policy"}


@pytest.mark.parametrize("half", ["sync", "async"])
async def test_a_taken_id_is_refused_alike_by_both_wrappers(half: str) -> None:
    lc = scope_vectorstore(planted_langchain(), ALICE)
    simple = SimpleVectorStore()
    bobs = TextNode(id_=foreign.stored_id(ALICE, "n1"), text="x", embedding=[1.0, 0.0])
    bobs.metadata = foreign.stamp(BOB, {})
    simple.add([bobs])
    li = ScopedVectorStore(simple, ALICE)
    mine = TextNode(id_="n1", text="mine", embedding=[0.0, 1.0])
    with pytest.raises(ScopeViolation, match=TAKEN):
        if half == "sync":
            lc.add_documents([Document("mine")], ids=["p1"])
        else:
            await lc.aadd_documents([Document("mine")], ids=["p1"])
    with pytest.raises(ScopeViolation, match=TAKEN):
        if half == "sync":
            li.add([mine])
        else:
            await li.async_add([mine])


def test_importers_and_wrappers_read_ids_and_stamps_alike() -> None:
    stored = foreign.stored_id(ALICE, "x")
    assert foreign.own_id(ALICE, stored) == "x" and foreign.own_id(BOB, stored) == stored
    stamped = foreign.stamp(ALICE, {"k": 1})
    assert foreign.unstamp(stamped) == {"k": 1} == foreign.claim(ALICE, stamped)
    with pytest.raises(ScopeViolation, match="another owner"):
        foreign.claim(BOB, stamped)
