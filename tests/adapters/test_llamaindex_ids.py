"""Ids are per user wherever stamped objects meet a framework that keys them by id.

Two users' documents with the same id, stamped and ingested in one batch: LlamaIndex's node
parser merges each node's metadata from ``{doc.id_: doc}``, a docstore keys documents by id,
and an ingestion pipeline with a vector store replaces a document whose id it has seen.
``stamp_nodes`` gives every id the user's prefix, and the readers strip it again.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import SimpleVectorStore

from muxi_isolation import Scope, policy
from muxi_isolation.adapters.llamaindex import HashingEmbedding, ScopedRetriever, stamp_nodes

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
EMBED = HashingEmbedding(dim=64)
TEXTS = {ALICE: "Alice has asthma.", BOB: "Bob has gout."}


def health_documents() -> list[Any]:
    """Each user's own document "health", stamped, in one batch."""
    return [
        *stamp_nodes(ALICE, [Document(id_="health", text=TEXTS[ALICE], metadata={"k": "a"})]),
        *stamp_nodes(BOB, [Document(id_="health", text=TEXTS[BOB])]),
    ]


def seen(found: list[Any]) -> list[tuple[str, str | None]]:
    return [(n.node.get_content(), n.node.ref_doc_id) for n in found]


async def test_from_documents_keeps_each_users_document() -> None:
    index = VectorStoreIndex.from_documents(health_documents(), embed_model=EMBED)
    retriever = index.as_retriever(similarity_top_k=5)
    assert seen(ScopedRetriever(retriever, ALICE).retrieve("has")) == [(TEXTS[ALICE], "health")]
    assert seen(await ScopedRetriever(retriever, BOB).aretrieve("has")) == [(TEXTS[BOB], "health")]
    assert set(index.ref_doc_info) == {policy.foreign_id(s, "health") for s in (ALICE, BOB)}


def test_sentence_splitter_keeps_each_users_stamp() -> None:
    nodes = SentenceSplitter().get_nodes_from_documents(health_documents())
    owners = {n.get_content(): n.metadata[policy.USER_KEY] for n in nodes}
    assert owners == {TEXTS[ALICE]: "alice", TEXTS[BOB]: "bob"}
    assert "k" not in next(n for n in nodes if n.get_content() == TEXTS[BOB]).metadata


@pytest.mark.parametrize("half", ["sync", "async"])
async def test_ingestion_pipeline_replaces_no_other_users_document(half: str) -> None:
    store = SimpleVectorStore()
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(), EMBED],
        docstore=SimpleDocumentStore(),
        vector_store=store,
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )
    if half == "sync":
        pipeline.run(documents=health_documents())
    else:
        await pipeline.arun(documents=health_documents())
    owners = sorted(md[policy.USER_KEY] for md in store.data.metadata_dict.values())
    assert owners == ["alice", "bob"]
    assert len(pipeline.docstore.get_all_document_hashes()) == 2


def test_stamped_node_ids_and_relations_round_trip() -> None:
    node = TextNode(
        id_="n1",
        text="x",
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc"),
            NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
        },
    )
    (stamped,) = stamp_nodes(ALICE, [node])
    assert stamped.node_id == policy.foreign_id(ALICE, "n1")
    assert stamped.ref_doc_id == policy.foreign_id(ALICE, "doc")
    assert node.node_id == "n1" and node.ref_doc_id == "doc"  # the caller's node is untouched
    index = VectorStoreIndex([stamped], embed_model=EMBED)
    (found,) = ScopedRetriever(index.as_retriever(), ALICE).retrieve("x")
    assert (found.node.node_id, found.node.ref_doc_id) == ("n1", "doc")
    assert [c.node_id for c in found.node.child_nodes or []] == ["c1", "c2"]
    assert ScopedRetriever(index.as_retriever(), BOB).retrieve("x") == []
