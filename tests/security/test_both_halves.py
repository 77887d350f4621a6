"""Both halves of every public method, sync and async, held to the same rules by one table.

The public methods are found by introspection: those defined in this package's code on
``Backend`` (graph methods included), ``SessionManager``, the facade handles
(``SessionMessages``, ``UserMemories``) and the adapters' public classes. Each sync method is
paired with its twin (``x`` / ``ax``, LlamaIndex's ``x`` / ``async_x``; async-only classes
such as ``MuxiDBChatStore`` give rows with one half). ``TABLE`` has one row per pair and
``test_the_table_covers_every_public_pair`` fails when a method has no row, so a new
method cannot ship with one half unchecked.

For every row, on every backend, each half in turn:

(a) called with a ``None`` scope, a non-``Scope`` (the header string), and, where it needs
    one, a scope without a session, raises the same typed error as its twin and writes
    nothing (every table of every identity, and the wrapped foreign stores, unchanged);
(b) a write is stamped with the caller's (tenant, user) (and the caller's session, for
    messages): everything it added is Alice's;
(c) records of another user planted underneath with the same ids (Bob of Alice's tenant,
    and user ``alice`` of another tenant) are never returned, changed or deleted.

One backend per kind serves the whole table (it is built once per test, and the rows use
their own ids), so the file stays fast.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from sqlalchemy import Engine, create_engine, select

from muxi_isolation import Backend, IsolationError, Memory, Message, Scope, policy
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import langgraph as lg
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.facade import SessionMessages, UserMemories
from muxi_isolation.records import Receipt, SessionRecord
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    StoreItem,
    WriteRecord,
)
from muxi_isolation.stores.sql import SQLBackend

EMBED = lc.HashingEmbeddings(8)
VEC = EMBED.embed_query("q")
NOW = datetime.now(timezone.utc)
LATER = NOW + timedelta(hours=2)

ALICE = Scope("t", "alice", "s1")
OTHERS = [Scope("t", "bob", "s1"), Scope("u", "alice", "s1")]  # same ids, other owners
SECRET = "other-secret"
HYBRID, DEFAULT = VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.DEFAULT
WORDS = "other secret alice own"  # a text query matching every seeded memory's words

# -- the surfaces and their public methods ----------------------------------------------------

SURFACES: dict[str, type] = {
    "Backend": Backend,
    "SessionManager": SessionManager,
    "SessionMessages": SessionMessages,
    "UserMemories": UserMemories,
    "lc.MuxiChatMessageHistory": lc.MuxiChatMessageHistory,
    "lc.MuxiVectorStore": lc.MuxiVectorStore,
    "lc.scope_vectorstore": lc.ScopedVectorStore,
    "li.MuxiChatStore": li.MuxiChatStore,
    "li.MuxiDBChatStore": li.MuxiDBChatStore,
    "li.MuxiVectorStore": li.MuxiVectorStore,
    "li.ScopedVectorStore": li.ScopedVectorStore,
    "lg.MuxiStore": lg.MuxiStore,
    "lg.MuxiCheckpointer": lg.MuxiCheckpointer,
}

# Public methods that read or write no user data, so have no row (with why).
NOT_DATA = {
    ("Backend", "close", "aclose"),  # releases connections
    ("SessionManager", "new_record", None),  # builds a record, stores nothing
    ("lc.MuxiVectorStore", "with_scope", None),  # binds a scope (refused if not one)
    ("lc.MuxiVectorStore", "current_scope", None),
    ("lc.MuxiVectorStore", "as_retriever", None),
    ("lc.scope_vectorstore", "from_texts", None),  # always TypeError: wrap a built store
    ("lc.scope_vectorstore", "as_retriever", None),  # builds a retriever, reads nothing
    ("li.MuxiChatStore", "class_name", None),
    ("li.MuxiChatStore", "model_post_init", None),
    ("li.MuxiDBChatStore", "class_name", None),
    ("li.MuxiDBChatStore", "model_post_init", None),
    ("li.MuxiVectorStore", "class_name", None),
    ("li.MuxiVectorStore", "model_post_init", None),
    ("li.ScopedVectorStore", "class_name", None),
    ("li.ScopedVectorStore", "model_post_init", None),
    ("li.ScopedVectorStore", "persist", None),  # persists the wrapped store, no scope
    ("lg.MuxiStore", "for_user", None),  # binds a scope (refused if not one)
    ("lg.MuxiCheckpointer", "for_user", None),
    ("lg.MuxiCheckpointer", "get_next_version", None),
}
# Opening and closing the storage an adapter owns (``from_url``), and building one: the
# objects they make are the ones the table's rows call.
OWNED = (
    "lc.MuxiChatMessageHistory",
    "lc.MuxiVectorStore",
    "li.MuxiChatStore",
    "li.MuxiDBChatStore",
    "li.MuxiVectorStore",
    "lg.MuxiStore",
    "lg.MuxiCheckpointer",
)
NOT_DATA |= {(s, "close", "aclose") for s in OWNED} | {(s, "setup", "asetup") for s in OWNED}
NOT_DATA |= {(s, "from_url", None) for s in OWNED} | {(s, "from_config", None) for s in OWNED}
NOT_DATA |= {("li.MuxiChatStore", "from_dict", None)}  # rebuilds a store from its URL
# Twins whose names do not follow ``x`` / ``ax``.
ODD_TWINS = {("lc.MuxiChatMessageHistory", "aget_messages"): "messages"}

Pair = tuple[str, "str | None", "str | None"]
Entry = tuple[Any, ...]


def public_pairs() -> set[Pair]:
    """(surface, sync, async) for every public method this package defines on a surface."""
    found: set[Pair] = set()
    for surface, cls in SURFACES.items():
        names: dict[str, bool] = {}  # name -> is a coroutine function
        for name, member in inspect.getmembers(cls):
            owner = next((k for k in cls.__mro__ if name in vars(k)), None)
            ours = owner is not None and owner.__module__.startswith("muxi_isolation")
            if name.startswith("_") or not ours or not callable(member):
                continue
            names[name] = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        for (where, name), sync in ODD_TWINS.items():
            if where == surface and name in names:
                names[sync] = False
        paired: set[str] = set()
        for name, is_async in names.items():
            if is_async:
                continue
            twin = next((t for t in (f"a{name}", f"async_{name}") if names.get(t)), None)
            found.add((surface, name, twin))
            paired.update({name, twin} - {None})
        for name, is_async in names.items():
            if is_async and name not in paired:
                sync = ODD_TWINS.get((surface, name))
                found.add((surface, sync, name) if sync else (surface, None, name))
                if sync:
                    found.discard((surface, sync, None))
    return found


# -- the environment ------------------------------------------------------------------------


@dataclass
class Env:
    backend: Backend
    sessions: SessionManager
    loop: asyncio.AbstractEventLoop
    raw: Engine | None = None  # reads the SQL tables beneath the API (RLS does not apply)
    seeded: set[Entry] = field(default_factory=lambda: {("not yet",)})
    lc_foreign: InMemoryVectorStore = field(default_factory=lambda: InMemoryVectorStore(EMBED))
    li_foreign: SimpleVectorStore = field(default_factory=SimpleVectorStore)

    def run(self, value: Any) -> Any:
        return self.loop.run_until_complete(value) if inspect.isawaitable(value) else value


@dataclass
class Call:
    """What a row's arguments are built from: the environment, the scope under test, and
    a tag (``x`` or ``ax``) so each half writes its own ids."""

    env: Env
    scope: Any
    tag: str


def bind(surface: str, env: Env, scope: Any) -> Any:
    """The object a surface's methods are called on, bound to ``scope`` where it binds."""
    b = env.backend
    makers: dict[str, Callable[[], Any]] = {
        "Backend": lambda: b,
        "SessionManager": lambda: env.sessions,
        "SessionMessages": lambda: SessionMessages(b, env.sessions, scope),
        "UserMemories": lambda: UserMemories(b, scope),
        "lc.MuxiChatMessageHistory": lambda: lc.MuxiChatMessageHistory(b, scope, env.sessions),
        "lc.MuxiVectorStore": lambda: lc.MuxiVectorStore(b, EMBED, scope=scope),
        "lc.scope_vectorstore": lambda: lc.scope_vectorstore(env.lc_foreign, scope),
        "li.MuxiChatStore": lambda: li.MuxiChatStore(b, scope),
        "li.MuxiDBChatStore": lambda: li.MuxiDBChatStore(b, scope),
        "li.MuxiVectorStore": lambda: li.MuxiVectorStore(b, scope=scope),
        "li.ScopedVectorStore": lambda: li.ScopedVectorStore(env.li_foreign, scope),
        "lg.MuxiStore": lambda: lg.MuxiStore(b, scope=scope),
        "lg.MuxiCheckpointer": lambda: lg.MuxiCheckpointer(b, sessions=env.sessions, scope=scope),
    }
    return makers[surface]()


# -- the table --------------------------------------------------------------------------------

Args = Callable[[Call], "tuple[tuple[Any, ...], dict[str, Any]]"]


@dataclass(frozen=True)
class Row:
    surface: str
    sync: str | None
    async_: str | None
    args: Args
    writes: bool = False  # (b): must add something, all of it Alice's
    session: bool = False  # needs a scope with a session
    admin: bool = False  # takes a tenant id, not a scope
    fails: str | None = None  # what the good call raises on both halves (a store's limit)

    @property
    def pair(self) -> Pair:
        return (self.surface, self.sync, self.async_)

    @property
    def label(self) -> str:
        return f"{self.surface}.{self.sync or self.async_}"


def a(*args: Any, **kwargs: Any) -> Args:
    """Fixed arguments after the object the method is bound to."""
    return lambda c: (args, kwargs)


def s(*args: Any, **kwargs: Any) -> Args:
    """The scope under test first, then fixed arguments (``Backend``, ``SessionManager``)."""
    return lambda c: ((c.scope, *args), kwargs)


def msg(c: Call) -> Message:
    return Message("user", f"alice-{c.tag}")


def chat(c: Call) -> ChatMessage:
    return ChatMessage(role="user", content=f"alice-{c.tag}")


def cp_config(checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"thread_id": "s1", "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(c: Call) -> dict[str, Any]:
    return {**empty_checkpoint(), "id": f"1ef-{c.tag}"}


def W(surface: str, sync: str | None, async_: str | None, args: Args, **kw: Any) -> Row:
    return Row(surface, sync, async_, args, writes=True, **kw)


def R(surface: str, sync: str | None, async_: str | None, args: Args, **kw: Any) -> Row:
    return Row(surface, sync, async_, args, **kw)


def backend_rows() -> list[Row]:
    B = "Backend"
    item = ((("notes",), "k1"),)
    return [
        W(B, "insert_session", "ainsert_session",
          lambda c: ((c.scope, SessionRecord(f"n-{c.tag}", ALICE.user(), NOW, NOW, LATER)), {})),
        R(B, "get_session", "aget_session", s("s1")),
        R(B, "get_receipt", "aget_receipt", s("r1")),
        R(B, "list_sessions", "alist_sessions", s()),
        W(B, "touch_session", "atouch_session",
          lambda c: ((c.scope, "s1", NOW, LATER + timedelta(hours=len(c.tag))), {})),
        R(B, "renew_session", "arenew_session", s("s1", now=NOW, expires_at=LATER)),
        R(B, "delete_session", "adelete_session", s("s1")),
        W(B, "append_messages", "aappend_messages", lambda c: ((c.scope, [msg(c)]), {}),
          session=True),
        W(B, "replace_messages", "areplace_messages", lambda c: ((c.scope, [msg(c)]), {}),
          session=True),
        W(B, "append_to_session", "aappend_to_session",
          lambda c: ((c.scope, [msg(c)]), {"now": NOW, "expires_at": LATER}), session=True),
        R(B, "get_messages", "aget_messages", s(), session=True),
        R(B, "read_turn", "aread_turn", s("s1", now=NOW, last=50)),
        R(B, "count_messages", "acount_messages", s(), session=True),
        R(B, "delete_messages", "adelete_messages", s(), session=True),
        R(B, "delete_message", "adelete_message", s(1), session=True),
        R(B, "take_oldest", "atake_oldest", s(1, archive=True), session=True),
        W(B, "upsert_memories", "aupsert_memories",
          lambda c: ((c.scope, [Memory(f"m-{c.tag}", "alice-new", {}, VEC)]), {})),
        R(B, "get_memories", "aget_memories", s(["m1"])),
        R(B, "list_memories", "alist_memories", s()),
        R(B, "count_memories", "acount_memories", s()),
        R(B, "delete_memories", "adelete_memories", s(ids=["m1"])),
        # hybrid: both rankings, the vector's and the text index's (the words are everyone's)
        R(B, "search_memories", "asearch_memories", s(VEC, 9, text=WORDS, mode="hybrid")),
        R(B, "forget_user", "aforget_user", s()),
        W(B, "restore_messages", "arestore_messages",
          lambda c: ((c.scope, [Message("user", f"alice-{c.tag}", seq=7)]), {}), session=True),
        R(B, "list_message_sessions", "alist_message_sessions", s()),
        R(B, "forget_tenant", "aforget_tenant", a(), admin=True),
        R(B, "list_tenants", "alist_tenants", a(), admin=True),
        R(B, "purge_expired", "apurge_expired", a(NOW), admin=True),
        W(B, "put_checkpoint", "aput_checkpoint",
          lambda c: ((c.scope, CheckpointRecord("s1", "", f"c-{c.tag}", None, "json", b"{}")),
                     {})),
        R(B, "get_checkpoints", "aget_checkpoints", s(CheckpointQuery(thread_id="s1"))),
        W(B, "put_checkpoint_writes", "aput_checkpoint_writes",
          lambda c: ((c.scope, [WriteRecord("s1", "", "c1", f"t-{c.tag}", 0, "ch", "json",
                                            b"1")]), {"replace": True})),
        R(B, "delete_thread", "adelete_thread", s("s1")),
        W(B, "copy_thread", "acopy_thread", lambda c: ((c.scope, "s1", f"cp-{c.tag}"), {})),
        R(B, "prune_threads", "aprune_threads", s(["s1"], keep_latest=False)),
        R(B, "delete_checkpoints", "adelete_checkpoints", s(CheckpointQuery(thread_id="s1"))),
        R(B, "get_items", "aget_items", s(item, now=NOW)),
        W(B, "put_items", "aput_items",
          lambda c: ((c.scope, [StoreItem(("notes",), f"k-{c.tag}", {"v": "a"}, NOW, NOW)], []),
                     {})),
        R(B, "search_items", "asearch_items", s(ItemQuery(prefix=("notes",)), now=NOW)),
        R(B, "refresh_items", "arefresh_items",
          s([StoreItem(("notes",), "k1", {}, ttl=5.0)], now=NOW)),
        R(B, "list_namespaces", "alist_namespaces", s([], now=NOW)),
    ]  # fmt: skip


def core_rows() -> list[Row]:
    M, SM, UM = "SessionManager", "SessionMessages", "UserMemories"
    return [
        W(M, "create", "acreate", lambda c: ((c.scope, f"n-{c.tag}"), {})),
        R(M, "get", "aget", s("s1")),
        R(M, "active", "aactive", s("s1")),
        R(M, "touch", "atouch", s("s1")),
        W(M, "ensure", "aensure", lambda c: ((c.scope, f"e-{c.tag}"), {})),
        W(M, "append", "aappend", lambda c: ((c.scope, [msg(c)]), {}), session=True),
        R(M, "list", "alist", s()),
        R(M, "expire", "aexpire", s("s1")),
        R(M, "delete", "adelete", s("s1")),
        W(SM, "add", "aadd", lambda c: (("user", f"alice-{c.tag}"), {}), session=True),
        W(SM, "add_messages", "aadd_messages", lambda c: (([msg(c)],), {}), session=True),
        R(SM, "get", "aget", a(), session=True),
        R(SM, "clear", "aclear", a(), session=True),
        W(UM, "add", "aadd", lambda c: (("alice-new",), {"id": f"m-{c.tag}", "embedding": VEC})),
        R(UM, "search", "asearch", a(VEC, 9, text=WORDS, mode="hybrid")),
        R(UM, "list", "alist", a()),
        R(UM, "get", "aget", a(["m1"])),
        R(UM, "delete", "adelete", a(["m1"])),
    ]


def langchain_rows() -> list[Row]:
    H, V, F = "lc.MuxiChatMessageHistory", "lc.MuxiVectorStore", "lc.scope_vectorstore"
    rows = [
        R(H, "messages", "aget_messages", a(), session=True),
        W(H, "add_messages", "aadd_messages",
          lambda c: (([HumanMessage(f"alice-{c.tag}")],), {}), session=True),
        R(H, "clear", "aclear", a(), session=True),
        W(V, "add_texts", "aadd_texts", lambda c: ((["alice-new"],), {"ids": [f"m-{c.tag}"]})),
        R(V, "delete", "adelete", a(["m1"])),
        R(V, "get_by_ids", "aget_by_ids", a(["m1"])),
        W(V, "from_texts", "afrom_texts",
          lambda c: ((["alice-new"], EMBED),
                     {"ids": [f"f-{c.tag}"], "backend": c.env.backend, "scope": c.scope})),
        W(F, "add_documents", "aadd_documents",
          lambda c: (([Document("alice-new")],), {"ids": [f"d-{c.tag}"]})),
        W(F, "add_texts", "aadd_texts", lambda c: ((["alice-new"],), {"ids": [f"t-{c.tag}"]})),
        R(F, "delete", "adelete", a(["d1"])),
        R(F, "get_by_ids", "aget_by_ids", a(["d1"])),
    ]  # fmt: skip
    for surface in (V, F):
        rows += [
            R(surface, "similarity_search", "asimilarity_search", a("q", 9)),
            R(surface, "similarity_search_with_score", "asimilarity_search_with_score",
              a("q", 9)),
            R(surface, "similarity_search_by_vector", "asimilarity_search_by_vector", a(VEC, 9)),
            R(surface, "max_marginal_relevance_search", "amax_marginal_relevance_search",
              a("q", 3, 9)),
            R(surface, "max_marginal_relevance_search_by_vector",
              "amax_marginal_relevance_search_by_vector", a(VEC, 3, 9)),
        ]  # fmt: skip
    rows += [
        R(V, "similarity_search_with_score_by_vector",
          "asimilarity_search_with_score_by_vector", a(VEC, 9)),
        R(V, "hybrid_search", "ahybrid_search", a(WORDS, 9)),
        R(V, "hybrid_search_with_score", "ahybrid_search_with_score", a(WORDS, 9)),
    ]  # fmt: skip
    return rows


def llamaindex_rows() -> list[Row]:
    C, D = "li.MuxiChatStore", "li.MuxiDBChatStore"
    rows = [
        W(C, "set_messages", "aset_messages", lambda c: (("s1", [chat(c)]), {})),
        R(C, "get_messages", "aget_messages", a("s1")),
        W(C, "add_message", "async_add_message", lambda c: (("s1", chat(c)), {})),
        R(C, "delete_messages", "adelete_messages", a("s1")),
        R(C, "delete_message", "adelete_message", a("s1", 0)),
        R(C, "delete_last_message", "adelete_last_message", a("s1")),
        R(C, "get_keys", "aget_keys", a()),
        R(D, None, "get_messages", a("s1")),
        R(D, None, "count_messages", a("s1")),
        W(D, None, "add_message", lambda c: (("s1", chat(c)), {})),
        W(D, None, "add_messages", lambda c: (("s1", [chat(c)]), {})),
        W(D, None, "set_messages", lambda c: (("s1", [chat(c)]), {})),
        R(D, None, "delete_message", a("s1", 0)),
        R(D, None, "delete_messages", a("s1")),
        R(D, None, "delete_oldest_messages", a("s1", 1)),
        R(D, None, "archive_oldest_messages", a("s1", 1)),
        R(D, None, "get_keys", a()),
    ]
    for surface in ("li.MuxiVectorStore", "li.ScopedVectorStore"):
        rows += [
            W(surface, "add", "async_add",
              lambda c: (([TextNode(text="alice-new", id_=f"n-{c.tag}", embedding=VEC)],), {})),
            R(surface, "delete", "adelete", a("d1")),
            R(surface, "delete_nodes", "adelete_nodes", a(["m1", "n1"])),
            R(surface, "get_nodes", "aget_nodes", a(["m1", "n1"]),
              fails="NotImplementedError" if surface == "li.ScopedVectorStore" else None),
            R(surface, "query", "aquery",
              a(VectorStoreQuery(query_embedding=VEC, similarity_top_k=9, query_str=WORDS,
                                 mode=HYBRID if surface == "li.MuxiVectorStore" else DEFAULT))),
            R(surface, "clear", "aclear", a()),
        ]  # fmt: skip
    return rows


def langgraph_rows() -> list[Row]:
    S, K = "lg.MuxiStore", "lg.MuxiCheckpointer"
    return [
        W(S, "batch", "abatch",
          lambda c: (([GetOp(("notes",), "k1"), SearchOp(("notes",)), ListNamespacesOp(),
                       PutOp(("notes",), f"k-{c.tag}", {"v": "alice"})],), {})),
        R(K, "get_tuple", "aget_tuple", a(cp_config())),
        R(K, "list", "alist", a(cp_config())),
        W(K, "put", "aput", lambda c: ((cp_config(), checkpoint(c), {}, {}), {})),
        W(K, "put_writes", "aput_writes",
          lambda c: ((cp_config("c1"), [("ch", c.tag)], f"task-{c.tag}"), {})),
        R(K, "delete_thread", "adelete_thread", a("s1")),
        W(K, "copy_thread", "acopy_thread", lambda c: (("s1", f"cp-{c.tag}"), {})),
        R(K, "prune", "aprune", a(["s1"], strategy="delete")),
        R(K, "delete_for_runs", "adelete_for_runs", a(["r1"])),
    ]  # fmt: skip


TABLE = backend_rows() + core_rows() + langchain_rows() + llamaindex_rows() + langgraph_rows()


# -- planting and looking underneath ------------------------------------------------------


def seed(env: Env, who: Scope, text: str) -> None:
    """One record of every kind for ``who``, under the ids every row uses (s1, m1, k1, c1,
    d1; SimpleVectorStore's node ids are global, so the node id is per owner)."""
    b, user = env.backend, who.user()
    b.forget_user(user)
    env.sessions.create(user, "s1")
    b.append_messages(who, [Message("user", text), Message("assistant", text)])
    receipt = Receipt("r1", "digest", {"text": text})
    b.insert_session(user, SessionRecord("s-r1", user, NOW, NOW, LATER), receipt=receipt)
    b.upsert_memories(user, [Memory("m1", text, {"ref_doc_id": "d1"}, VEC)])
    b.put_items(user, [StoreItem(("notes",), "k1", {"v": text}, NOW, NOW)], [])
    b.put_checkpoint(user, CheckpointRecord("s1", "", "c1", None, "json", b"{}"))
    b.put_checkpoint_writes(
        user, [WriteRecord("s1", "", "c1", "t", 0, "ch", "json", b"1")], replace=True
    )
    foreign = lc.scope_vectorstore(env.lc_foreign, user)
    foreign.delete(["d1"])
    foreign.add_texts([text], ids=["d1"])
    li_foreign = li.ScopedVectorStore(env.li_foreign, user)
    node = "n1" if who.same_user(ALICE) else f"n-{who.tenant_id}-{who.user_id}"
    li_foreign.delete_nodes([node])
    li_foreign.add([TextNode(text=text, id_=node, ref_doc_id="d1", embedding=VEC)])


def owner_of(metadata: dict[str, Any] | None) -> tuple[str, str] | None:
    md = metadata or {}
    if policy.TENANT_KEY not in md:
        return None
    return (md[policy.TENANT_KEY], md[policy.USER_KEY])


def look(env: Env) -> set[Entry]:
    """Everything stored, as (owner, kind, ...) entries; an owner is (tenant, user).

    On SQL, every row of every scoped table, read beneath the API (so a row written with a
    wrong or missing scope shows too); in memory, everything of the three identities. And
    everything in the foreign stores the wrappers write to.
    """
    out = look_sql(env, env.raw) if env.raw is not None else look_api(env)
    for doc_id, doc in env.lc_foreign.store.items():
        out.add((owner_of(doc["metadata"]), "lc-doc", doc_id, doc["text"]))
    for node_id, md in env.li_foreign.data.metadata_dict.items():
        out.add((owner_of(md), "li-node", node_id))
    return out


def look_sql(env: Env, raw: Engine) -> set[Entry]:
    assert isinstance(env.backend, SQLBackend)
    tables = env.backend.tables
    out: set[Entry] = set()
    with raw.connect() as conn:
        for table in tables.scoped:
            kind = "message" if table is tables.messages else table.name
            for row in conn.execute(select(table)).mappings():
                owner = (row["tenant_id"], row["user_id"])
                where = row.get("session_id", row.get("thread_id"))
                # what a later row relies on: the row without its clocks and counters
                kept = (
                    None
                    if table is tables.counters
                    else [(k, v) for k, v in sorted(row.items()) if not k.endswith("_at")]
                )
                out.add((owner, kind, where, repr(sorted(row.items())), repr(kept)))
    return out


def look_api(env: Env) -> set[Entry]:
    b, out = env.backend, set()
    for who in (ALICE.user(), *(o.user() for o in OTHERS)):
        me = (who.tenant_id, who.user_id)
        records = b.list_sessions(who)
        out |= {(me, "session", r.id, r.expires_at) for r in records}
        sids = {r.id for r in records} | set(b.list_message_sessions(who))
        for sid in sids:
            for m in b.get_messages(who.with_session(sid)):
                assert m.scope is not None
                out.add((me, "message", m.scope.session_id, m.seq, m.status, repr(m.content)))
        out |= {(me, "memory", m.id, m.content) for m in b.list_memories(who)}
        receipt = b.get_receipt(who, "r1")
        if receipt is not None:
            out.add((me, "receipt", receipt.key, repr(receipt.response)))
        out |= {
            (me, "item", i.namespace, i.key, repr(i.value), i.expires_at)
            for i in b.search_items(who, ItemQuery(), now=NOW)
        }
        for cp in b.get_checkpoints(who, CheckpointQuery()):
            out.add((me, "checkpoint", cp.thread_id, cp.checkpoint_id, len(cp.writes)))
    return out


# -- running a row ---------------------------------------------------------------------------


def halves(row: Row) -> Iterator[tuple[str, str]]:
    if row.sync:
        yield "x", row.sync
    if row.async_:
        yield "ax", row.async_


def call(env: Env, row: Row, name: str, scope: Any, tag: str) -> Any:
    args, kwargs = row.args(Call(env, scope, tag))
    if row.admin:  # the tenant id stands where a scope would
        tenant = scope.tenant_id if isinstance(scope, Scope) else scope
        args = (tenant, *args) if name.endswith("forget_tenant") else args
        kwargs = {**kwargs, "tenant_id": tenant} if name.endswith("purge_expired") else kwargs
    if row.sync == "messages" and name == "messages":  # LangChain's property
        return bind(row.surface, env, scope).messages
    return settle(env, getattr(bind(row.surface, env, scope), name)(*args, **kwargs))


def settle(env: Env, value: Any) -> Any:
    """The value of a call, with iterators drained: a generator's checks run only then."""
    value = env.run(value)
    if inspect.isasyncgen(value):

        async def drain() -> list[Any]:
            return [x async for x in value]

        return env.run(drain())
    if inspect.isgenerator(value):
        return list(value)
    return value


def outcome(env: Env, row: Row, name: str, scope: Any, tag: str) -> str:
    """The error type a call raised, or "ok"; an untyped error is a failure by itself."""
    try:
        call(env, row, name, scope, tag)
    except IsolationError as exc:
        return type(exc).__name__
    except Exception as exc:
        return f"untyped {type(exc).__name__}: {exc}"
    return "ok"


def bad_scopes(row: Row) -> list[Any]:
    if row.admin:  # a tenant id that is not one
        return [] if row.sync == "list_tenants" else ["", " t"]
    bad: list[Any] = [None, ALICE.header]  # no scope, and a header string instead of one
    if row.session:
        bad.append(ALICE.user())
    return bad


def mine(entry: Entry, row: Row) -> bool:
    """Whether a stored entry is the caller's to change: Alice's (messages: in her session);
    for tenant-wide maintenance, anything of Alice's tenant."""
    if row.admin:
        return entry[0] is not None and entry[0][0] == ALICE.tenant_id
    me = (ALICE.tenant_id, ALICE.user_id)
    return entry[0] == me and (entry[1] != "message" or entry[2] == ALICE.session_id)


def fresh(env: Env, now: set[Entry] | None = None) -> set[Entry]:
    """Alice's seed in place (made again only if a row changed any of it); what is stored
    (``now``: what a look just found, if nothing ran since)."""
    now = look(env) if now is None else now
    if env.seeded <= {stable(env, e) for e in now}:
        return now
    seed(env, ALICE, "alice-own")
    now = look(env)
    env.seeded = {stable(env, e) for e in now if e[0] == (ALICE.tenant_id, ALICE.user_id)}
    return now


def stable(env: Env, entry: Entry) -> Entry:
    """An entry as far as the next row cares: on SQL, a touch or a spent seq does not count
    (the in-memory look has no clocks or counters)."""
    return entry[:3] + entry[4:] if env.raw is not None and len(entry) == 5 else entry


def check(env: Env, row: Row) -> list[str]:
    """Every failure of (a), (b) and (c) for one row, each half in turn."""
    problems: list[str] = []
    before = fresh(env)
    for bad in bad_scopes(row):  # (a)
        got = {name: outcome(env, row, name, bad, tag) for tag, name in halves(row)}
        if len(set(got.values())) != 1 or "ok" in got.values() or "untyped" in str(got):
            problems.append(f"(a) scope {bad!r}: {got}")
    after = look(env)
    if after != before:
        problems.append(f"(a) a refused call wrote: {sorted(map(repr, after ^ before))}")
    errors: dict[str, str] = {}
    for tag, name in halves(row):
        before = fresh(env, after) if tag == "ax" else after  # each half from the same seed
        try:
            result = call(env, row, name, ALICE, tag)
        except Exception as exc:
            errors[name] = type(exc).__name__
            after = look(env)
            if after != before:
                problems.append(f"{name} failed and wrote: {sorted(map(repr, after ^ before))}")
            continue
        after = look(env)
        changed, added = after ^ before, after - before
        if row.writes and not (added and all(mine(e, row) for e in added)):  # (b)
            problems.append(f"(b) {name} stamped {sorted(map(repr, added))}")
        if not all(mine(e, row) for e in changed):  # (c): only the caller's records move
            problems.append(f"(c) {name} touched {sorted(map(repr, changed))}")
        if SECRET in repr(result):  # (c): nothing of another user comes back
            problems.append(f"(c) {name} returned another user's record: {result!r}")
    if errors and (set(errors.values()) != {row.fails} or len(errors) != len(list(halves(row)))):
        problems.append(f"the caller's own call failed: {errors}")
    return problems


@pytest.fixture
def env(backend: Backend, request: pytest.FixtureRequest) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    raw = None
    if isinstance(backend, SQLBackend):  # the superuser on PostgreSQL; the same file on SQLite
        postgres = backend.dialect == "postgresql"
        # pooled: the fixture's engine opens a connection per use, too slow for every step
        raw = create_engine(request.getfixturevalue("postgres_admin").url) if postgres else None
        raw = raw or backend._engine
    env = Env(backend, SessionManager(backend), loop, raw)
    yield env
    if raw is not None and isinstance(backend, SQLBackend) and backend.dialect == "postgresql":
        raw.dispose()
    loop.run_until_complete(backend.aclose())
    loop.close()


def plant(env: Env) -> None:
    for other in OTHERS:
        seed(env, other, SECRET)


# -- the tests --------------------------------------------------------------------------------


def test_the_table_covers_every_public_pair() -> None:
    rows = [row.pair for row in TABLE]
    assert len(rows) == len(set(rows)), "a pair has two rows"
    missing = public_pairs() - set(rows) - NOT_DATA
    assert not missing, f"public methods without a row in TABLE: {sorted(map(str, missing))}"
    assert not set(rows) - public_pairs(), "rows for methods that are gone"
    assert not NOT_DATA - public_pairs(), "NOT_DATA names methods that are gone"


def test_both_halves_fail_closed_stamp_and_never_leak(env: Env) -> None:
    """(a), (b) and (c) for every row of the table, on this backend."""
    problems: list[str] = []
    for i, row in enumerate(TABLE):
        if i == 0 or TABLE[i - 1].admin:  # tenant-wide maintenance may have removed Bob
            plant(env)
        problems += [f"{row.label}: {p}" for p in check(env, row)]
    assert not problems, "\n".join(problems)
