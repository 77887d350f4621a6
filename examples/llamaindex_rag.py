"""Retrieval per user with LlamaIndex: a user never retrieves another user's documents.

1. ``MuxiVectorStore``: the user's own memories as a LlamaIndex vector store. Build a
   ``VectorStoreIndex.from_vector_store`` per user, insert documents, ``as_retriever()``.
2. ``ScopedVectorStore``: one shared store we do not own (here ``SimpleVectorStore``), one
   scoped view per user: writes stamped, reads filtered and verified.
3. ``ScopedRetriever``: any retriever over shared, stamped nodes, with every result checked.

Embeddings come from ``HashingEmbedding`` (deterministic, offline): word overlap, not
meaning, but enough to rank.

Run: python examples/llamaindex_rag.py [STORAGE_URL]
     (default: a fresh SQLite file; "memory://" also works. No network, about two seconds.)
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from llama_index.core import Document, StorageContext, SummaryIndex, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore

from muxi_isolation import Backend, ReservedKey, Scope, open_backend
from muxi_isolation.adapters.llamaindex import (
    HashingEmbedding,
    MuxiVectorStore,
    ScopedRetriever,
    ScopedVectorStore,
    stamp_nodes,
)

DIM = 256
EMBED = HashingEmbedding(dim=DIM)
ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
DOCS = {
    ALICE: [
        ("health", "Alice's blood type is A positive. Her doctor is Dr. Rivera."),
        ("travel", "Alice flies to Lisbon on March 3rd; her passport number is P-ALICE-123."),
    ],
    BOB: [
        ("health", "Bob's blood type is O negative. His doctor is Dr. Chen."),
        ("travel", "Bob drives to Porto in April; his passport number is P-BOB-987."),
    ],
}
QUESTION = "what is my blood type and who is my doctor?"


def documents(scope: Scope) -> list[Document]:
    return [Document(text=text, id_=doc_id) for doc_id, text in DOCS[scope]]


def show(scope: Scope, texts: list[str]) -> None:
    print(f"   {scope.header:15} -> {texts[0]}")
    others = [s for s in DOCS if s != scope]
    leaked = [t for t in texts for s in others for _, d in DOCS[s] if t == d]
    assert not leaked, f"{scope} retrieved another user's document: {leaked}"


def part1_own_store(backend: Backend) -> None:
    print("1. MuxiVectorStore: VectorStoreIndex.from_vector_store per user")
    indexes = {}
    for scope in DOCS:
        store = MuxiVectorStore(backend, scope)
        index = VectorStoreIndex.from_vector_store(store, embed_model=EMBED)
        for document in documents(scope):
            index.insert(document)
        indexes[scope] = index
    for scope, index in indexes.items():
        found = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
        show(scope, [n.node.get_content() for n in found])
    # both users call a document "health"; deleting by that id only touches your own
    indexes[BOB].delete_ref_doc("health")
    left = indexes[ALICE].as_retriever(similarity_top_k=5).retrieve(QUESTION)
    kept = sorted({n.node.ref_doc_id for n in left if n.node.ref_doc_id})
    print(f"   bob deleted his 'health'; alice still has {kept}")


def part2_shared_store() -> None:
    print("2. ScopedVectorStore over one shared SimpleVectorStore")
    shared = SimpleVectorStore()
    retrievers = {}
    for scope in DOCS:
        view = ScopedVectorStore(shared, scope)
        # SimpleVectorStore keeps no text: each user's index gets its own docstore
        context = StorageContext.from_defaults(vector_store=view)
        index = VectorStoreIndex.from_documents(
            documents(scope), storage_context=context, embed_model=EMBED
        )
        retrievers[scope] = index.as_retriever(similarity_top_k=2)
    for scope, retriever in retrievers.items():
        show(scope, [n.node.get_content() for n in retriever.retrieve(QUESTION)])
    print(f"   the shared store holds {len(shared.data.embedding_dict)} nodes")
    try:
        forged = TextNode(
            text="mine now", metadata={"muxi_user_id": "alice"}, embedding=[1.0] * DIM
        )
        ScopedVectorStore(shared, BOB).add([forged])
    except ReservedKey as exc:
        print(f"   bob forging alice's stamp: ReservedKey ({exc})")


def part3_any_retriever() -> None:
    print("3. ScopedRetriever over a retriever that sees everyone's (stamped) nodes")
    nodes = [
        node
        for scope in DOCS
        for node in stamp_nodes(
            scope, [TextNode(text=t, id_=f"{scope.user_id}-{d}") for d, t in DOCS[scope]]
        )
    ]
    everything = SummaryIndex(nodes).as_retriever()  # returns every node it holds
    print(f"   the raw retriever returns {len(everything.retrieve(QUESTION))} nodes")
    print("   (each node dropped for belonging to someone else is logged as a warning)")
    for scope in DOCS:
        found = ScopedRetriever(everything, scope).retrieve(QUESTION)
        show(scope, [n.node.get_content() for n in found])


def main(url: str) -> None:
    logging.basicConfig(stream=sys.stdout, format="   [log] %(message)s")
    backend = open_backend(url, embedding_dimension=DIM)
    try:
        part1_own_store(backend)
    finally:
        backend.close()
    part2_shared_store()
    part3_any_retriever()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(f"sqlite:///{Path(tmp) / 'rag.db'}")
