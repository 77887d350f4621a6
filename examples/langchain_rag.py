"""Retrieval-augmented answers per user: the same question, each user's own documents.

Two ways to get a per-user retriever:

1. ``MuxiVectorStore``: native on the project's memories. One store, and
   ``store.with_scope(scope).as_retriever()`` per user.
2. ``scope_vectorstore(store, scope)``: a LangChain store we do not own (here
   ``InMemoryVectorStore``) shared by every user, seen through one user's scope.

The embedding is a deterministic hashing embedding (offline, no model); the "LLM" is a
fake that quotes the context it was given, so the output shows exactly what was retrieved.

Run: python examples/langchain_rag.py [STORAGE_URL]
     (default: a fresh SQLite file; "memory://" also works. No network, about a second.)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from muxi_isolation import Scope, open_backend
from muxi_isolation.adapters.langchain import (
    HashingEmbeddings,
    MuxiVectorStore,
    scope_vectorstore,
)

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
NOTES = {
    ALICE: [
        ("The quarterly budget review is on Friday at 10.", {"kind": "calendar"}),
        ("My project codename is Bluebird.", {"kind": "work"}),
        ("Buy oat milk and coffee beans.", {"kind": "shopping"}),
    ],
    BOB: [
        ("The dentist appointment is on Friday at 15.", {"kind": "calendar"}),
        ("My project codename is Red Falcon.", {"kind": "work"}),
    ],
}
QUESTIONS = ["What is my project codename?", "What is on Friday?"]
EXPECTED = {  # each user's answers come from that user's notes, never the other's
    f"{ALICE.header}|{QUESTIONS[0]}": NOTES[ALICE][1][0],
    f"{ALICE.header}|{QUESTIONS[1]}": NOTES[ALICE][0][0],
    f"{BOB.header}|{QUESTIONS[0]}": NOTES[BOB][1][0],
    f"{BOB.header}|{QUESTIONS[1]}": NOTES[BOB][0][0],
}


def quote_context(prompt_value: object) -> str:
    """A fake LLM: answers with the first line of context it was given."""
    text = str(prompt_value)
    context = text.split("Context:\n", 1)[1].split("\n", 1)[0]
    return f"According to your notes: {context}"


def rag_chain(retriever: BaseRetriever) -> Runnable[str, str]:
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")

    def join(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs) or "(nothing)"

    return (
        {"context": retriever | join, "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(lambda p: quote_context(p.to_string()))
    )


def ask_all(label: str, retrievers: dict[Scope, BaseRetriever]) -> dict[str, str]:
    print(f"--- {label}")
    answers = {}
    for scope, retriever in retrievers.items():
        chain = rag_chain(retriever)
        for question in QUESTIONS:
            answer = chain.invoke(question)
            answers[f"{scope.header}|{question}"] = answer
            print(f"{scope.header:>15} > {question}\n{'':>15} < {answer}")
    return answers


def main(url: str) -> None:
    embed = HashingEmbeddings()
    backend = open_backend(url, embedding_dimension=embed.dim)  # SQL stores fix the dimension
    print(f"storage: {url}\n")

    # 1. native: one store over the project's memories, one scope per user
    store = MuxiVectorStore(backend, embed)
    for scope, notes in NOTES.items():
        texts, metadatas = zip(*notes, strict=True)
        store.with_scope(scope).add_texts(list(texts), list(metadatas))
    native = ask_all(
        "MuxiVectorStore",
        {scope: store.with_scope(scope).as_retriever(k=1) for scope in NOTES},
    )

    # a filter in the project's dialect narrows within the user's own documents only
    calendar = store.with_scope(BOB).similarity_search(
        "Friday", k=5, filter={"kind": {"$in": ["calendar"]}}
    )
    print(f"\nbob's calendar notes: {[d.page_content for d in calendar]}\n")
    assert [d.page_content for d in calendar] == ["The dentist appointment is on Friday at 15."]

    # 2. a store we do not own, shared by both users, scoped per user
    shared = InMemoryVectorStore(embed)
    for scope, notes in NOTES.items():
        scope_vectorstore(shared, scope).add_texts([t for t, _ in notes], [m for _, m in notes])
    wrapped = ask_all(
        "InMemoryVectorStore through scope_vectorstore",
        {
            scope: scope_vectorstore(shared, scope).as_retriever(search_kwargs={"k": 1})
            for scope in NOTES
        },
    )

    for answers in (native, wrapped):
        assert answers == {k: f"According to your notes: {v}" for k, v in EXPECTED.items()}
    backend.close()
    print("\nisolation held: every answer came from the asking user's own notes.")


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'langchain_rag.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
