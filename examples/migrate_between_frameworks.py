"""Move an app from LangChain to LlamaIndex without copying a byte: same store, same users.

A LangChain app stored two users' chats and memories. The LlamaIndex version of the app
opens the same database: each user reads back their own history (roles, tool calls,
metadata) and finds their own memories, and never the other's.

Run: python examples/migrate_between_frameworks.py [STORAGE_URL]
     (default: a SQLite file in a temporary directory; memory:// works too; no network;
     about two seconds)
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import closing
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from llama_index.core.vector_stores.types import VectorStoreQuery

from muxi_isolation import Backend, Scope, SessionManager, open_backend
from muxi_isolation.adapters.langchain import (
    HashingEmbeddings,
    MuxiChatMessageHistory,
    MuxiVectorStore,
)
from muxi_isolation.adapters.llamaindex import MuxiChatStore
from muxi_isolation.adapters.llamaindex import MuxiVectorStore as LlamaVectorStore

EMBED = HashingEmbeddings(64)  # one embedding for both frameworks: vectors are reused
USERS = {"tenant_a:ann": "jazz", "tenant_b:ann": "chess"}  # same user id, two tenants


def written_by_langchain(backend: Backend) -> None:
    sessions = SessionManager(backend)
    for header, hobby in USERS.items():
        user = Scope.parse(header)
        sessions.create(user, "chat-1")
        MuxiChatMessageHistory(backend, user.with_session("chat-1"), sessions).add_messages(
            [
                HumanMessage(f"I love {hobby}", additional_kwargs={"channel": "web"}),
                AIMessage("", tool_calls=[{"id": "c1", "name": "remember", "args": {"x": hobby}}]),
                ToolMessage("saved", tool_call_id="c1"),
                AIMessage(f"Noted: you love {hobby}."),
            ]
        )
        MuxiVectorStore(backend, EMBED, scope=user).add_texts(
            [f"{header} loves {hobby}"], [{"topic": "hobby"}], ids=["hobby"]
        )


def read_by_llamaindex(backend: Backend) -> bool:
    held = True
    for header, hobby in USERS.items():
        user = Scope.parse(header)
        chat = MuxiChatStore(backend, user).get_messages("chat-1")
        roles = [m.role.value for m in chat]
        print(f"{header}: {roles} | first message kwargs {chat[0].additional_kwargs}")
        query = VectorStoreQuery(query_embedding=EMBED.embed_query(hobby), similarity_top_k=5)
        nodes = LlamaVectorStore(backend, user).query(query).nodes or []
        texts = [n.get_content() for n in nodes]
        print(f"{header}: memories {texts}")
        other = next(h for h in USERS.values() if h != hobby)
        if any(other in t for t in texts) or any(other in str(m) for m in chat):
            print("LEAKED")
            held = False
        held = held and roles == ["user", "assistant", "tool", "assistant"] and len(texts) == 1
    return held


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'app.db'}"
    options = {} if url == "memory://" else {"embedding_dimension": 64}
    with closing(open_backend(url, **options)) as backend:
        written_by_langchain(backend)  # yesterday's app
        held = read_by_llamaindex(backend)  # today's app, same store
    if not held:
        sys.exit(1)
    print("isolation held: each user read their own LangChain data through LlamaIndex")


if __name__ == "__main__":
    main()
