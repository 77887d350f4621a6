"""Stateful property tests: random operations by random actors through every interface, on
every backend; after every step each actor sees exactly its own records.

One hypothesis ``RuleBasedStateMachine`` per backend kind (memory, SQLite, PostgreSQL; the
slower two split into parts that run side by side).
Each step picks an actor, an operation and the interface it goes through:

- the core ``Backend`` (sync and async twins), ``SessionManager`` and the ``Isolation`` facade;
- LangChain: ``MuxiHistoryFactory`` / ``MuxiChatMessageHistory``, ``MuxiVectorStore`` (bound
  scope or the context's), ``scope_vectorstore`` over ``InMemoryVectorStore`` (and over a
  real ``PGVector`` on the PostgreSQL run);
- LlamaIndex: ``MuxiChatStore``, ``MuxiDBChatStore``, ``MuxiVectorStore``, and
  ``ScopedVectorStore`` over ``SimpleVectorStore`` (and a real ``PGVectorStore``);
- LangGraph: ``MuxiStore`` (namespaces per user) and ``MuxiCheckpointer`` (threads are
  the user's sessions), bound with ``for_user`` or through ``configurable["user_id"]``;
- the HTTP server (``create_app``), with each tenant's client key and the raw header.

The native interfaces share one store, so a message written through LangChain is read back
through LlamaIndex, HTTP and the core. The oracle is a dict model; every read is compared
with it for equality (nothing more, nothing less), and an invariant re-reads every identity
through the core after every step.

The actors have colliding-looking ids: user ``a:b`` of the default tenant and user ``b`` of
tenant ``a``; ``A`` and ``a`` as tenant and as user; ``%`` and ``_``; ``café`` composed and
decomposed (one identity: ids are NFC-normalized) and with a Cyrillic a (U+0430). Session and
memory ids are shared between users on purpose (``s1``, ``m1``, ...).

Profiles (``MUXI_HYPOTHESIS_PROFILE``, see ``security_profiles``): ``ci`` is derandomized,
``long`` runs many more and longer sequences.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from langchain_core.messages import HumanMessage
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.checkpoint.base import empty_checkpoint
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import VectorStoreQuery
from security_profiles import PROFILE, profile, scaled
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from muxi_isolation import (
    Backend,
    Isolation,
    KeyRing,
    Memory,
    Message,
    Scope,
    SessionExists,
    SessionNotFound,
    policy,
)
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import langgraph as lg
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.context import use_scope
from muxi_isolation.errors import InvalidIdentifier
from muxi_isolation.policy import foreign_id_prefix as id_prefix
from muxi_isolation.server import create_app

DIM = 16
LC_EMBED = lc.HashingEmbeddings(DIM)
LI_EMBED = li.HashingEmbedding(dim=DIM)

# (tenant, user) as the app receives them; twins differ only before NFC.
ACTORS: list[tuple[str, str]] = [
    ("a", "b"),
    ("default", "a:b"),
    ("a", "B"),
    ("A", "b"),
    ("a", "%"),
    ("a", "_"),
    ("a", "caf\u00e9"),
    ("a", "cafe\u0301"),  # the same identity as the one above
    ("a", "c\u0430f\u00e9"),  # Cyrillic a (U+0430): someone else
    ("default", "0"),
]
TENANTS = sorted({unicodedata.normalize("NFC", t) for t, _ in ACTORS})
KEYS = {tenant: f"fmc_{secrets.token_hex(8)}" for tenant in TENANTS}
SIDS = ["s1", "S1", "s%", "s_", "s1:x", "sess_1"]
MIDS = ["m1", "M1", "m%", "m_", "1"]
NAMESPACES = [("memories",), ("mem%",), ("m_mories",), ("memories", "x"), ("a:b",), ("%",)]
FAR = 50  # a k larger than anyone's memories: searches must return all of them

Ident = tuple[str, str]


def ident(actor: int) -> Ident:
    tenant, user = ACTORS[actor]
    return unicodedata.normalize("NFC", tenant), unicodedata.normalize("NFC", user)


IDENTS = sorted({ident(i) for i in range(len(ACTORS))})
SPELLINGS = {who: [i for i in range(len(ACTORS)) if ident(i) == who] for who in IDENTS}


def scope_of(actor: int, session: str | None = None) -> Scope:
    tenant, user = ACTORS[actor]
    return Scope(tenant, user, session)


def header_of(actor: int) -> dict[str, bytes]:
    tenant, user = ACTORS[actor]
    return {
        "X-Muxi-Client-Key": KEYS[unicodedata.normalize("NFC", tenant)].encode(),
        "X-Muxi-User-Id": f"{tenant}:{user}".encode(),
    }


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(block.get("text", "")) for block in content)


def pasteable(who: Ident) -> bool:
    """What llama-index's PGVectorStore can be scoped to (it pastes ids into SQL)."""
    return not any(ch in "'\"\\:" for ch in "".join(who))


# -- the oracle --------------------------------------------------------------------------


@dataclass
class Model:
    sessions: dict[Ident, set[str]] = field(default_factory=lambda: defaultdict(set))
    messages: dict[tuple[Ident, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    memories: dict[Ident, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    lc_memory: dict[Ident, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    lc_pg: dict[Ident, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    li_simple: dict[Ident, set[str]] = field(default_factory=lambda: defaultdict(set))
    li_pg: dict[Ident, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    lg_items: dict[Ident, dict[tuple[tuple[str, ...], str], str]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    checkpoints: dict[tuple[Ident, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    auto_sids: set[str] = field(default_factory=set)

    def sids(self, who: Ident) -> set[str]:
        """Every session id this identity has a record or messages under."""
        return self.sessions[who] | {s for (w, s), got in self.messages.items() if w == who and got}


# -- the environment one test shares across its examples ----------------------------------


class Dropped(logging.Handler):
    """Records every "dropped a record from outside" the verification layers log.

    Verification is the last wall; the first (filters in SQL, scoped filters in wrapped
    stores) must never need it, so any drop fails the test too.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Env:
    kind: str
    backend: Backend
    loop: asyncio.AbstractEventLoop
    isolation: Isolation
    http: httpx.AsyncClient
    pg_vector: Any = None  # langchain PGVector (PostgreSQL run)
    pg_store: Any = None  # llama-index PGVectorStore (PostgreSQL run)
    pg_clear: Callable[[], None] | None = None
    steps: int = 0
    examples: int = 0
    dropped: Dropped = field(default_factory=Dropped)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def env_for(
    make_backend: Callable[..., Backend], request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Env]]:
    made: list[Env] = []
    cleanups: list[Callable[[], None]] = []
    watched = logging.getLogger("muxi_isolation")

    def make(kind: str) -> Env:
        backend = (
            make_backend(kind) if kind == "memory" else make_backend(kind, embedding_dimension=DIM)
        )
        loop = asyncio.new_event_loop()
        isolation = Isolation(backend)
        keys = KeyRing()
        for tenant, key in KEYS.items():
            keys.add_client_key(tenant, key)
        app = create_app(isolation, keys)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://muxi")
        env = Env(kind, backend, loop, isolation, http)
        if kind == "postgres":
            env.pg_vector, env.pg_store, env.pg_clear = foreign_pg_stores(request, cleanups)
        made.append(env)
        watched.addHandler(env.dropped)
        return env

    yield make
    for env in made:
        watched.removeHandler(env.dropped)
    for env in made:
        env.run(env.http.aclose())
        env.run(env.backend.aclose())
        env.loop.close()
    for cleanup in cleanups:
        cleanup()


def foreign_pg_stores(
    request: pytest.FixtureRequest, cleanups: list[Callable[[], None]]
) -> tuple[Any, Any, Callable[[], None]]:
    """A real PGVector and a real llama-index PGVectorStore on the suite's server."""
    from langchain_postgres import PGVector
    from llama_index.vector_stores.postgres import PGVectorStore

    urls = request.getfixturevalue("postgres_urls")
    admin = request.getfixturevalue("postgres_admin")
    base = make_url(urls.admin).set(drivername="postgresql+psycopg")
    engine = create_engine(base, poolclass=NullPool)
    collection = f"prop_{uuid.uuid4().hex}"
    pg_vector = PGVector(LC_EMBED, connection=engine, collection_name=collection)
    schema = f"li_{secrets.token_hex(6)}"
    pg_store = PGVectorStore(
        engine=engine,
        async_engine=create_async_engine(base, poolclass=NullPool),  # required, unused
        schema_name=schema,
        table_name="nodes",
        embed_dim=DIM,
        initialization_fail_on_error=True,
    )
    pg_store.add([])  # create its table now

    def clear() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'TRUNCATE "{schema}"."data_nodes"'))
            conn.execute(
                text(
                    "DELETE FROM langchain_pg_embedding WHERE collection_id = "
                    "(SELECT uuid FROM langchain_pg_collection WHERE name = :c)"
                ),
                {"c": collection},
            )

    def cleanup() -> None:
        pg_vector.delete_collection()
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    cleanups.append(cleanup)
    return pg_vector, pg_store, clear


# -- the machine ---------------------------------------------------------------------------

actors = st.integers(0, len(ACTORS) - 1)
mids = st.sampled_from(MIDS)
counts = st.integers(1, 3)


def machine(env: Env) -> type[RuleBasedStateMachine]:
    backend, run, iso = env.backend, env.run, env.isolation
    sessions = iso.sessions
    postgres = env.kind == "postgres"

    class Isolated(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            env.examples += 1
            self.model = Model()
            self.n = 0
            self.checks = 0
            for who in IDENTS:  # a clean slate in the shared store
                backend.forget_user(Scope(*who))
            if env.pg_clear is not None:
                env.pg_clear()
            self.lc_memory = InMemoryVectorStore(LC_EMBED)
            self.li_simple = SimpleVectorStore()

        def content(self, label: str) -> str:
            self.n += 1
            return f"{label}-{self.n}"

        def pick_sid(self, data: st.DataObject) -> str:
            known = sorted(set(SIDS) | self.model.auto_sids)
            return data.draw(st.sampled_from(known), label="sid")

        # -- sessions ----------------------------------------------------------------

        @rule(actor=actors, data=st.data(), via=st.sampled_from(["manager", "amanager"]))
        def create_named_session(self, actor: int, data: st.DataObject, via: str) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            exists = sid in self.model.sessions[who]
            try:
                if via == "manager":
                    record = sessions.create(scope_of(actor), sid)
                else:
                    record = run(sessions.acreate(scope_of(actor), sid))
            except SessionExists:
                assert exists, (who, sid)
                return
            assert not exists, (who, sid)
            assert (record.scope.tenant_id, record.scope.user_id) == who
            self.model.sessions[who].add(sid)

        @rule(actor=actors, via=st.sampled_from(["facade", "http"]))
        def create_fresh_session(self, actor: int, via: str) -> None:
            who = ident(actor)
            if via == "facade":
                sid = iso.create_session(f"{ACTORS[actor][0]}:{ACTORS[actor][1]}").id
            else:
                reply = run(env.http.post("/v1/sessions", headers=header_of(actor)))
                assert reply.status_code == 201, reply.text
                assert Scope.parse(reply.json()["user_id"]) == Scope(*who)
                sid = reply.json()["id"]
            assert sid not in self.model.sessions[who]
            self.model.sessions[who].add(sid)
            self.model.auto_sids.add(sid)

        @rule(actor=actors, data=st.data(), via=st.sampled_from(["core", "manager", "http"]))
        def delete_session(self, actor: int, data: st.DataObject, via: str) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            existed = sid in self.model.sessions[who]
            if via == "core":
                assert backend.delete_session(scope_of(actor), sid) == existed
            elif via == "manager":
                try:
                    sessions.delete(scope_of(actor), sid)
                    assert existed
                except SessionNotFound:
                    assert not existed
            else:
                path = f"/v1/sessions/{quote(sid, safe='')}"
                reply = run(env.http.delete(path, headers=header_of(actor)))
                assert reply.status_code == (204 if existed else 404), reply.text
            self.model.sessions[who].discard(sid)
            self.model.messages.pop((who, sid), None)

        @rule(
            actor=actors,
            via=st.sampled_from(["core", "acore", "facade", "llama", "allama_db", "http"]),
        )
        def list_sessions(self, actor: int, via: str) -> None:
            scope, header = scope_of(actor), f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
            if via == "core":
                got = [s.id for s in backend.list_sessions(scope)]
            elif via == "acore":
                got = [s.id for s in run(backend.alist_sessions(scope))]
            elif via == "facade":
                got = [s.id for s in iso.list_sessions(header)]
            elif via == "llama":
                got = li.MuxiChatStore(backend, scope, sessions=sessions).get_keys()
            elif via == "allama_db":
                got = run(li.MuxiDBChatStore(backend, scope, sessions=sessions).get_keys())
            else:
                reply = run(env.http.get("/v1/sessions", headers=header_of(actor)))
                got = [s["id"] for s in reply.json()["sessions"]]
            assert sorted(got) == sorted(self.model.sessions[ident(actor)]), (via, actor)

        # -- messages ------------------------------------------------------------------

        @rule(
            actor=actors,
            data=st.data(),
            count=counts,
            via=st.sampled_from(
                [
                    "core",
                    "acore",
                    "facade",
                    "langchain",
                    "alangchain",
                    "llama",
                    "allama",
                    "allama_db",
                    "http",
                ]
            ),
        )
        def append(self, actor: int, data: st.DataObject, count: int, via: str) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            has_session = sid in self.model.sessions[who]
            texts = [self.content(via) for _ in range(count)]
            scope = scope_of(actor, sid)
            header = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
            creates = False
            if via in ("core", "acore"):
                records = [Message("user", t) for t in texts]
                if via == "core":
                    stored = backend.append_messages(scope, records)
                else:
                    stored = run(backend.aappend_messages(scope, records))
                assert [m.scope.user() for m in stored] == [Scope(*who)] * count
            elif via == "facade":
                try:
                    iso.messages(sid, header).add_messages([Message("user", t) for t in texts])
                except SessionNotFound:
                    assert not has_session
                    return
            elif via in ("langchain", "alangchain"):
                factory = lc.MuxiHistoryFactory(backend, sessions, create_sessions=True)
                history = factory(user_id=header, session_id=sid)
                if via == "langchain":
                    history.add_messages([HumanMessage(t) for t in texts])
                else:
                    run(history.aadd_messages([HumanMessage(t) for t in texts]))
                creates = True
            elif via in ("llama", "allama"):
                store = li.MuxiChatStore(backend, scope_of(actor), sessions=sessions)
                for t in texts:
                    if via == "llama":
                        store.add_message(sid, ChatMessage(role="user", content=t))
                    else:
                        run(store.async_add_message(sid, ChatMessage(role="user", content=t)))
                creates = True
            elif via == "allama_db":
                db = li.MuxiDBChatStore(backend, scope_of(actor), sessions=sessions)
                run(db.add_messages(sid, [ChatMessage(role="user", content=t) for t in texts]))
                creates = True
            else:
                body = {"message": " ".join(texts), "session_id": sid}
                reply = run(env.http.post("/v1/chat", headers=header_of(actor), json=body))
                if not has_session:
                    assert reply.status_code == 404, reply.text
                    return
                assert reply.status_code == 200, reply.text
                texts = [" ".join(texts), reply.json()["response"]]
            if creates:
                self.model.sessions[who].add(sid)
            self.model.messages[(who, sid)].extend(texts)

        @rule(
            actor=actors,
            data=st.data(),
            via=st.sampled_from(
                [
                    "core",
                    "acore",
                    "facade",
                    "langchain",
                    "alangchain",
                    "llama",
                    "allama",
                    "allama_db",
                    "http",
                ]
            ),
        )
        def read_messages(self, actor: int, data: st.DataObject, via: str) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            expected = list(self.model.messages.get((who, sid), []))
            needs_session = via in ("facade", "http")
            if needs_session and sid not in self.model.sessions[who]:
                expected_missing = True
            else:
                expected_missing = False
            scope = scope_of(actor, sid)
            got: list[str]
            try:
                if via == "core":
                    got = [text_of(m.content) for m in backend.get_messages(scope)]
                elif via == "acore":
                    got = [text_of(m.content) for m in run(backend.aget_messages(scope))]
                elif via == "facade":
                    header = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
                    got = [text_of(m.content) for m in iso.history(sid, header)]
                elif via == "langchain":
                    history = lc.MuxiChatMessageHistory(backend, scope, sessions)
                    got = [text_of(m.content) for m in history.messages]
                elif via == "alangchain":
                    history = lc.MuxiChatMessageHistory(backend, scope, sessions)
                    got = [text_of(m.content) for m in run(history.aget_messages())]
                elif via == "llama":
                    store = li.MuxiChatStore(backend, scope_of(actor), sessions=sessions)
                    got = [m.content or "" for m in store.get_messages(sid)]
                elif via == "allama":
                    store = li.MuxiChatStore(backend, scope_of(actor), sessions=sessions)
                    got = [m.content or "" for m in run(store.aget_messages(sid))]
                elif via == "allama_db":
                    db = li.MuxiDBChatStore(backend, scope_of(actor), sessions=sessions)
                    got = [m.content or "" for m in run(db.get_messages(sid, status=None))]
                else:
                    path = f"/v1/sessions/{quote(sid, safe='')}"
                    reply = run(env.http.get(path, headers=header_of(actor)))
                    if reply.status_code == 404:
                        raise SessionNotFound(sid)
                    assert reply.status_code == 200, reply.text
                    assert Scope.parse(reply.json()["user_id"]) == Scope(*who)
                    got = [text_of(m["content"]) for m in reply.json()["messages"]]
            except SessionNotFound:
                assert expected_missing, (via, who, sid)
                return
            assert not expected_missing, (via, who, sid)
            assert got == expected, (via, who, sid)

        @rule(
            actor=actors,
            data=st.data(),
            via=st.sampled_from(["core", "langchain", "llama", "allama_db"]),
        )
        def clear_messages(self, actor: int, data: st.DataObject, via: str) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            has_session = sid in self.model.sessions[who]
            before = list(self.model.messages.get((who, sid), []))
            scope = scope_of(actor, sid)
            if via == "core":
                assert backend.delete_messages(scope) == len(before)
            elif via == "langchain":
                try:
                    lc.MuxiChatMessageHistory(backend, scope, sessions).clear()
                except SessionNotFound:
                    assert not has_session
                    return
            elif via == "llama":
                gone = li.MuxiChatStore(backend, scope_of(actor), sessions=sessions)
                removed = gone.delete_messages(sid)
                if not has_session:
                    assert removed is None
                    return
                assert [m.content for m in removed or []] == before
            else:
                db = li.MuxiDBChatStore(backend, scope_of(actor), sessions=sessions)
                run(db.delete_messages(sid))
            self.model.messages.pop((who, sid), None)

        # -- memories (one store behind the core, the facade and both frameworks) --------

        @rule(
            actor=actors,
            mid=mids,
            via=st.sampled_from(
                [
                    "core",
                    "acore",
                    "facade",
                    "langchain",
                    "alangchain",
                    "langchain_context",
                    "llama",
                    "allama",
                ]
            ),
        )
        def upsert_memory(self, actor: int, mid: str, via: str) -> None:
            words = self.content(via)
            scope, who = scope_of(actor), ident(actor)
            vector = LC_EMBED.embed_query(words)
            if via == "core":
                backend.upsert_memories(scope, [Memory(mid, words, {"by": via}, vector)])
            elif via == "acore":
                run(backend.aupsert_memories(scope, [Memory(mid, words, {"by": via}, vector)]))
            elif via == "facade":
                header = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
                iso.memories(header).add(words, {"by": via}, embedding=vector, id=mid)
            elif via in ("langchain", "alangchain", "langchain_context"):
                bound = via != "langchain_context"
                store = lc.MuxiVectorStore(backend, LC_EMBED, scope=scope if bound else None)
                if via == "alangchain":
                    ids = run(store.aadd_texts([words], [{"by": via}], ids=[mid]))
                else:
                    with use_scope(scope):
                        ids = store.add_texts([words], [{"by": via}], ids=[mid])
                assert ids == [mid]
            else:
                node = TextNode(id_=mid, text=words, embedding=LI_EMBED.get_text_embedding(words))
                store = li.MuxiVectorStore(backend, scope)
                ids = store.add([node]) if via == "llama" else run(store.async_add([node]))
                assert ids == [mid]
            self.model.memories[who][mid] = words

        @rule(
            actor=actors,
            via=st.sampled_from(
                [
                    "core_list",
                    "core_get",
                    "core_search",
                    "acore_search",
                    "facade_list",
                    "facade_search",
                    "langchain_get",
                    "langchain_search",
                    "alangchain_search",
                    "llama_get",
                    "llama_query",
                    "allama_query",
                ]
            ),
        )
        def read_memories(self, actor: int, via: str) -> None:
            scope, who = scope_of(actor), ident(actor)
            q = LC_EMBED.embed_query("anything")
            header = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
            got: dict[str, str]
            if via == "core_list":
                got = {m.id: m.content for m in backend.list_memories(scope)}
            elif via == "core_get":
                got = {m.id: m.content for m in backend.get_memories(scope, MIDS)}
            elif via == "core_search":
                got = {m.id: m.content for m, _ in backend.search_memories(scope, q, FAR)}
            elif via == "acore_search":
                hits = run(backend.asearch_memories(scope, q, FAR))
                got = {m.id: m.content for m, _ in hits}
            elif via == "facade_list":
                got = {m.id: m.content for m in iso.memories(header).list()}
            elif via == "facade_search":
                got = {m.id: m.content for m, _ in iso.memories(header).search(q, FAR)}
            elif via.endswith(("langchain_get", "langchain_search")):
                store = lc.MuxiVectorStore(backend, LC_EMBED, scope=scope)
                if via == "langchain_get":
                    docs = store.get_by_ids(MIDS)
                elif via == "langchain_search":
                    docs = store.similarity_search("anything", k=FAR)
                else:
                    docs = run(store.asimilarity_search("anything", k=FAR))
                got = {str(d.id): d.page_content for d in docs}
            else:
                store = li.MuxiVectorStore(backend, scope)
                if via == "llama_get":
                    nodes = store.get_nodes()
                else:
                    query = VectorStoreQuery(
                        query_embedding=LI_EMBED.get_query_embedding("anything"),
                        similarity_top_k=FAR,
                    )
                    result = (
                        store.query(query) if via == "llama_query" else run(store.aquery(query))
                    )
                    nodes = result.nodes or []
                got = {n.node_id: n.get_content() for n in nodes}
            assert got == self.model.memories[who], (via, who)

        @rule(
            actor=actors,
            mid=mids,
            via=st.sampled_from(["core", "facade", "langchain", "llama", "allama"]),
        )
        def delete_memory(self, actor: int, mid: str, via: str) -> None:
            scope, who = scope_of(actor), ident(actor)
            had = mid in self.model.memories[who]
            if via == "core":
                assert backend.delete_memories(scope, ids=[mid]) == int(had)
            elif via == "facade":
                header = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
                assert iso.memories(header).delete([mid]) == int(had)
            elif via == "langchain":
                lc.MuxiVectorStore(backend, LC_EMBED, scope=scope).delete([mid])
            elif via == "llama":
                li.MuxiVectorStore(backend, scope).delete_nodes([mid])
            else:
                run(li.MuxiVectorStore(backend, scope).adelete_nodes([mid]))
            self.model.memories[who].pop(mid, None)

        # Hypothesis draws this one-argument rule far more often than the others; every
        # sixth step is enough to wipe users mid-sequence.
        @precondition(lambda self: self.checks % 6 == 5)
        @rule(actor=actors)
        def forget_user(self, actor: int) -> None:
            who = ident(actor)
            counts = backend.forget_user(scope_of(actor))
            assert counts["sessions"] == len(self.model.sessions[who])
            assert counts["memories"] == len(self.model.memories[who])
            written = sum(len(v) for (w, _), v in self.model.messages.items() if w == who)
            assert counts["messages"] == written
            self.model.sessions.pop(who, None)
            self.model.memories.pop(who, None)
            self.model.lg_items.pop(who, None)
            for key in [k for k in self.model.messages if k[0] == who]:
                del self.model.messages[key]
            for key in [k for k in self.model.checkpoints if k[0] == who]:
                del self.model.checkpoints[key]

        @rule(actor=actors, mid=mids)
        def search_with_a_widening_filter(self, actor: int, mid: str) -> None:
            """An OR the caller controls still ANDs with the scope, in every reader."""
            scope, who = scope_of(actor), ident(actor)
            spec = {"$or": [{"by": {"$exists": True}}, {"$not": {"by": "x"}}]}
            mine = self.model.memories[who]
            assert {m.id for m in backend.list_memories(scope, filter=spec)} == set(mine)
            store = lc.MuxiVectorStore(backend, LC_EMBED, scope=scope)
            docs = store.similarity_search("x", k=FAR, filter=spec)
            assert {d.id for d in docs} == set(mine)

        # -- foreign stores ------------------------------------------------------------

        # Hypothesis favours the rule it sorts first (the fewest arguments): this cheap one.
        @rule()
        def raw_foreign_stores_hold_only_stamped_records(self) -> None:
            """Below the wrappers: every record carries its owner's stamp and id space."""
            raw = self.lc_memory.store
            owners = {
                (doc["metadata"][policy.TENANT_KEY], doc["metadata"][policy.USER_KEY])
                for doc in raw.values()
            }
            assert owners <= set(IDENTS)
            for stored_id, doc in raw.items():
                who = (doc["metadata"][policy.TENANT_KEY], doc["metadata"][policy.USER_KEY])
                assert stored_id.startswith(id_prefix(Scope(*who)))
            assert len(raw) == sum(len(docs) for docs in self.model.lc_memory.values())
            got = set()
            for stored_id, md in self.li_simple.data.metadata_dict.items():
                who = (md[policy.TENANT_KEY], md[policy.USER_KEY])
                prefix = id_prefix(Scope(*who))
                assert stored_id.startswith(prefix)
                got.add((who, stored_id[len(prefix) :]))
            assert got == {(who, m) for who, ms in self.model.li_simple.items() for m in ms}

        @rule(actor=actors, mid=mids, asynchronous=st.booleans())
        def lc_memory_add(self, actor: int, mid: str, asynchronous: bool) -> None:
            words = self.content("lcmem")
            store = lc.scope_vectorstore(self.lc_memory, scope_of(actor))
            if asynchronous:
                assert run(store.aadd_texts([words], ids=[mid])) == [mid]
            else:
                assert store.add_texts([words], ids=[mid]) == [mid]
            self.model.lc_memory[ident(actor)][mid] = words

        @rule(actor=actors, mid=mids)
        def lc_memory_delete(self, actor: int, mid: str) -> None:
            lc.scope_vectorstore(self.lc_memory, scope_of(actor)).delete([mid])
            self.model.lc_memory[ident(actor)].pop(mid, None)

        @rule(actor=actors, search=st.booleans())
        def lc_memory_read(self, actor: int, search: bool) -> None:
            store = lc.scope_vectorstore(self.lc_memory, scope_of(actor))
            docs = store.similarity_search("x", k=FAR) if search else store.get_by_ids(MIDS)
            got = {str(d.id): d.page_content for d in docs}
            assert got == self.model.lc_memory[ident(actor)]

        @rule(actor=actors, mid=mids)
        def li_simple_add(self, actor: int, mid: str) -> None:
            who = ident(actor)
            words = self.content("lisimple")
            node = TextNode(id_=mid, text=words, embedding=LI_EMBED.get_text_embedding(words))
            store = li.ScopedVectorStore(self.li_simple, scope_of(actor))
            assert store.add([node]) == [mid]  # ids are per user: no other owner can block it
            self.model.li_simple[who].add(mid)

        @rule(actor=actors, mid=mids)
        def li_simple_delete(self, actor: int, mid: str) -> None:
            li.ScopedVectorStore(self.li_simple, scope_of(actor)).delete_nodes([mid])
            self.model.li_simple[ident(actor)].discard(mid)

        def simple_ids(self, actor: int) -> set[str]:
            store = li.ScopedVectorStore(self.li_simple, scope_of(actor))
            query = VectorStoreQuery(
                query_embedding=LI_EMBED.get_query_embedding("x"), similarity_top_k=FAR
            )
            return set(store.query(query).ids or [])

        def simple_expected(self, actor: int) -> set[str]:
            return set(self.model.li_simple[ident(actor)])

        @precondition(lambda self: postgres)
        @rule(actor=actors, mid=mids)
        def lc_pg_add(self, actor: int, mid: str) -> None:
            words = self.content("lcpg")
            store = lc.scope_vectorstore(env.pg_vector, scope_of(actor))
            assert store.add_texts([words], ids=[mid]) == [mid]
            self.model.lc_pg[ident(actor)][mid] = words

        @precondition(lambda self: postgres)
        @rule(actor=actors, mid=mids)
        def lc_pg_delete(self, actor: int, mid: str) -> None:
            lc.scope_vectorstore(env.pg_vector, scope_of(actor)).delete([mid])
            self.model.lc_pg[ident(actor)].pop(mid, None)

        @precondition(lambda self: postgres)
        @rule(actor=actors, search=st.booleans())
        def lc_pg_read(self, actor: int, search: bool) -> None:
            store = lc.scope_vectorstore(env.pg_vector, scope_of(actor))
            docs = store.similarity_search("x", k=FAR) if search else store.get_by_ids(MIDS)
            assert {str(d.id): d.page_content for d in docs} == self.model.lc_pg[ident(actor)]

        @precondition(lambda self: postgres)
        @rule(actor=actors, mid=mids)
        def li_pg_add(self, actor: int, mid: str) -> None:
            who = ident(actor)
            words = self.content("lipg")
            node = TextNode(id_=mid, text=words, embedding=LI_EMBED.get_text_embedding(words))
            store = li.ScopedVectorStore(env.pg_store, scope_of(actor))
            try:
                store.add([node])
            except InvalidIdentifier:
                assert not pasteable(who), who
                return
            assert pasteable(who), who
            self.model.li_pg[who].append((mid, words))  # PGVectorStore appends: one row each

        @precondition(lambda self: postgres)
        @rule(actor=actors, mid=mids)
        def li_pg_delete(self, actor: int, mid: str) -> None:
            who = ident(actor)
            store = li.ScopedVectorStore(env.pg_store, scope_of(actor))
            try:
                store.delete_nodes([mid])
            except InvalidIdentifier:
                assert not pasteable(who), who
                return
            self.model.li_pg[who] = [(m, w) for m, w in self.model.li_pg[who] if m != mid]

        @precondition(lambda self: postgres)
        @rule(actor=actors, query=st.booleans())
        def li_pg_read(self, actor: int, query: bool) -> None:
            who = ident(actor)
            store = li.ScopedVectorStore(env.pg_store, scope_of(actor))
            try:
                if query:
                    spec = VectorStoreQuery(
                        query_embedding=LI_EMBED.get_query_embedding("x"), similarity_top_k=FAR
                    )
                    nodes = store.query(spec).nodes or []
                else:
                    nodes = store.get_nodes()
            except InvalidIdentifier:
                assert not pasteable(who), who
                return
            got = sorted((n.node_id, n.get_content()) for n in nodes)
            assert got == sorted(self.model.li_pg[who]), who

        # -- LangGraph: the store and the checkpointer ------------------------------------

        def lg_store(self, actor: int, bound: bool = True) -> Any:
            store = lg.MuxiStore(backend)
            return store.for_user(scope_of(actor)) if bound else store

        @rule(
            actor=actors,
            ns=st.sampled_from(NAMESPACES),
            key=mids,
            via=st.sampled_from(["put", "aput", "batch"]),
        )
        def lg_put(self, actor: int, ns: tuple[str, ...], key: str, via: str) -> None:
            words = self.content("lg")
            store = self.lg_store(actor)
            if via == "put":
                store.put(ns, key, {"text": words})
            elif via == "aput":
                run(store.aput(ns, key, {"text": words}))
            else:
                from langgraph.store.base import PutOp

                store.batch([PutOp(ns, key, {"text": words})])
            self.model.lg_items[ident(actor)][(ns, key)] = words

        @rule(actor=actors, ns=st.sampled_from(NAMESPACES), key=mids)
        def lg_delete(self, actor: int, ns: tuple[str, ...], key: str) -> None:
            self.lg_store(actor).delete(ns, key)
            self.model.lg_items[ident(actor)].pop((ns, key), None)

        @rule(
            actor=actors,
            ns=st.sampled_from(NAMESPACES),
            key=mids,
            how=st.sampled_from(["get", "search", "prefix", "namespaces", "asearch"]),
        )
        def lg_read(self, actor: int, ns: tuple[str, ...], key: str, how: str) -> None:
            mine = self.model.lg_items[ident(actor)]
            store = self.lg_store(actor)
            if how == "get":
                item = store.get(ns, key)
                assert (None if item is None else item.value["text"]) == mine.get((ns, key))
            elif how in ("search", "asearch", "prefix"):
                prefix = ns[:1] if how == "prefix" else ()
                if how == "asearch":
                    hits = run(store.asearch(prefix, limit=FAR))
                else:
                    hits = store.search(prefix, limit=FAR)
                got = {(tuple(h.namespace), h.key): h.value["text"] for h in hits}
                want = {k: v for k, v in mine.items() if k[0][: len(prefix)] == prefix}
                assert got == want, (how, prefix)
            else:
                listed = set(store.list_namespaces(limit=FAR))
                assert listed == {n for n, _ in mine}

        def saver(self, actor: int, bound: bool) -> Any:
            saver = lg.MuxiCheckpointer(backend, sessions=sessions)
            return saver.for_user(scope_of(actor)) if bound else saver

        def config(self, actor: int, sid: str | None, bound: bool) -> dict[str, Any]:
            configurable: dict[str, Any] = {} if sid is None else {"thread_id": sid}
            if sid is not None:
                configurable["checkpoint_ns"] = ""
            if not bound:
                configurable["user_id"] = f"{ACTORS[actor][0]}:{ACTORS[actor][1]}"
            return {"configurable": configurable}

        @rule(actor=actors, data=st.data(), bound=st.booleans())
        def lg_checkpoint(self, actor: int, data: st.DataObject, bound: bool) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            checkpoint = empty_checkpoint()
            saved = self.saver(actor, bound).put(
                self.config(actor, sid, bound), checkpoint, {"step": self.n}, {}
            )
            assert saved["configurable"]["checkpoint_id"] == checkpoint["id"]
            self.model.sessions[who].add(sid)  # a thread is a session of its user
            self.model.checkpoints[(who, sid)].append(checkpoint["id"])

        @rule(actor=actors, data=st.data(), bound=st.booleans())
        def lg_checkpoint_read(self, actor: int, data: st.DataObject, bound: bool) -> None:
            sid = self.pick_sid(data)
            who = ident(actor)
            saver = self.saver(actor, bound)
            latest = saver.get_tuple(self.config(actor, sid, bound))
            mine = self.model.checkpoints.get((who, sid), [])
            assert (None if latest is None else latest.checkpoint["id"]) == (
                mine[-1] if mine else None
            ), (who, sid)
            everything = list(saver.list(self.config(actor, None, bound)))
            got = sorted(
                (t.config["configurable"]["thread_id"], t.checkpoint["id"]) for t in everything
            )
            want = sorted(
                (s, c) for (w, s), ids in self.model.checkpoints.items() if w == who for c in ids
            )
            assert got == want, who

        @rule(actor=actors, data=st.data())
        def lg_delete_thread(self, actor: int, data: st.DataObject) -> None:
            sid = self.pick_sid(data)
            self.saver(actor, True).delete_thread(sid)
            self.model.checkpoints.pop((ident(actor), sid), None)

        # -- after every step: every identity, through the core -----------------------

        @invariant()
        def everyone_sees_exactly_their_own(self) -> None:
            env.steps += 1
            self.checks += 1
            assert env.dropped.messages == [], env.dropped.messages
            model = self.model
            every_sid = sorted({sid for who in IDENTS for sid in model.sids(who)})
            for who in IDENTS:
                spellings = SPELLINGS[who]
                actor = spellings[self.n % len(spellings)]  # twins take turns
                scope = scope_of(actor)
                assert sorted(s.id for s in backend.list_sessions(scope)) == sorted(
                    model.sessions[who]
                ), who
                mine = model.sids(who)
                others = [s for s in every_sid if s not in mine][:2]
                for sid in sorted(mine) + others:
                    rows = backend.get_messages(scope.with_session(sid))
                    got = [text_of(m.content) for m in rows]
                    assert got == model.messages.get((who, sid), []), (who, sid)
                memories = {m.id: m.content for m in backend.list_memories(scope)}
                assert memories == model.memories[who], who
                items = lg.MuxiStore(backend).for_user(scope).search((), limit=FAR)
                got_items = {(tuple(h.namespace), h.key): h.value["text"] for h in items}
                assert got_items == model.lg_items[who], who
                lc_store = lc.scope_vectorstore(self.lc_memory, scope)
                docs = lc_store.get_by_ids(MIDS)
                assert {str(d.id): d.page_content for d in docs} == model.lc_memory[who], who
                assert self.simple_ids(actor) == self.simple_expected(actor), who

    return Isolated


# The slower backends' sequences are split into parts that xdist runs side by side; each part
# has its own seed (the ci profile stays derandomized), together the profile's examples.
PARTS = {"memory": 1, "sqlite": 2, "postgres": 3}


def part_examples(kind: str, part: int) -> int:
    parts, total = PARTS[kind], scaled("machine_examples")
    return total // parts + (part < total % parts)


@pytest.mark.parametrize(
    ("kind", "part"), [(kind, part) for kind, parts in PARTS.items() for part in range(parts)]
)
def test_every_actor_sees_exactly_their_own_records(
    env_for: Callable[[str], Env], kind: str, part: int
) -> None:
    env = env_for(kind)
    sequences = machine(env)
    if PROFILE == "ci":
        sequences = seed(part)(sequences)
    run_state_machine_as_test(
        sequences,
        settings=profile(
            max_examples=part_examples(kind, part),
            stateful_step_count=scaled("machine_steps"),
        ),
    )
    assert env.examples >= part_examples(kind, part)
    print(f"[{PROFILE}] {kind} part {part}: {env.examples} sequences, {env.steps} checked states")


def test_the_parts_add_up_to_the_profiles_examples() -> None:
    for kind, parts in PARTS.items():
        assert sum(part_examples(kind, p) for p in range(parts)) == scaled("machine_examples")
