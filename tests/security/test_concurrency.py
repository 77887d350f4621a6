"""Concurrency: 1,000 asyncio tasks and 16 threads, each its own scope, interleave writes
and reads on one store; every read sees exactly its own scope's records, and at the end
every acknowledged write is there exactly once and nothing else is.

The scopes collide on purpose: every user has a session called ``s`` and memories called
``m0``, ``m1``, ...; user names repeat across tenants. While the tasks and threads run, 40
more tasks append to one shared session of one user, so the per-session ``seq`` counter is
contended: its messages must come back complete, with distinct seqs.

The final count reads the tables directly (as their owner, below row-level security), so
it sees every row, whoever it belongs to.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from muxi_isolation import Backend, Memory, Message, Scope, SessionManager
from muxi_isolation.stores.sql import SQLBackend

TASKS = 1000
THREADS = 16
THREAD_ROUNDS = 12
TASK_ROUNDS = 1
SHARED_WRITERS = 40
SHARED = Scope("t_shared", "everyone", "s")
VECTOR = [1.0, 0.5, 0.25]


def task_scope(i: int) -> Scope:
    return Scope(f"t{i % 7}", f"u{i // 7}")  # user names repeat across tenants


def thread_scope(i: int) -> Scope:
    return Scope("t_thread", f"u{i}")


@dataclass
class Ledger:
    """What each scope was acknowledged, and every wrong read seen."""

    messages: dict[Scope, list[str]] = field(default_factory=dict)
    memories: dict[Scope, dict[str, str]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked_message(self, scope: Scope, content: str) -> None:
        with self.lock:
            self.messages.setdefault(scope, []).append(content)

    def acked_memory(self, scope: Scope, mid: str, content: str) -> None:
        with self.lock:
            self.memories.setdefault(scope, {})[mid] = content

    def check(self, what: str, scope: Scope, got: object, want: object) -> None:
        if got != want:
            with self.lock:
                self.wrong.append(f"{what} for {scope}: got {got!r}, want {want!r}")


class Throttled:
    """A backend's async calls, at most ``limit`` at a time. All the tasks still run and
    interleave; they queue here, with no timeout, rather than for a pooled connection, whose
    30 s checkout timeout a heavily loaded 2-core machine could reach."""

    def __init__(self, backend: Backend, limit: int) -> None:
        self._backend = backend
        self._gate = asyncio.Semaphore(limit)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._gate:
                return await method(*args, **kwargs)

        return call


async def task(backend: Any, i: int, ledger: Ledger) -> None:
    user = task_scope(i)
    scope = user.with_session("s")
    mine = f"{user.tenant_id}/{user.user_id}"
    for r in range(TASK_ROUNDS):
        content = f"{mine}#{r}"
        await backend.aappend_messages(scope, [Message("user", content)])
        ledger.acked_message(scope, content)
        await asyncio.sleep(0)
        got = [m.content for m in await backend.aget_messages(scope)]
        ledger.check("messages", scope, got, ledger.messages[scope])
        await backend.aupsert_memories(user, [Memory(f"m{r}", content, {"r": r}, VECTOR)])
        ledger.acked_memory(user, f"m{r}", content)
        await asyncio.sleep(0)
        listed = {m.id: m.content for m in await backend.alist_memories(user)}
        ledger.check("memories", user, listed, ledger.memories[user])


async def shared_writer(backend: Any, i: int, ledger: Ledger) -> None:
    content = f"shared#{i}"
    stored = await backend.aappend_messages(SHARED, [Message("user", content)])
    ledger.acked_message(SHARED, content)
    ledger.check("shared stamp", SHARED, [m.scope for m in stored], [SHARED])


def thread(backend: Backend, i: int, ledger: Ledger, start: threading.Barrier) -> None:
    user = thread_scope(i)
    scope = user.with_session("s")
    SessionManager(backend).create(user, "s")
    start.wait()
    for r in range(THREAD_ROUNDS):
        content = f"thread{i}#{r}"
        backend.append_messages(scope, [Message("user", content), Message("assistant", "ok")])
        ledger.acked_message(scope, content)
        ledger.acked_message(scope, "ok")
        got = [m.content for m in backend.get_messages(scope)]
        ledger.check("messages", scope, got, ledger.messages[scope])
        backend.upsert_memories(user, [Memory(f"m{r % 3}", content, {}, VECTOR)])
        ledger.acked_memory(user, f"m{r % 3}", content)
        listed = {m.id: m.content for m in backend.list_memories(user)}
        ledger.check("memories", user, listed, ledger.memories[user])
        hits = backend.search_memories(user, VECTOR, k=10)
        ledger.check("search", user, {m.id for m, _ in hits}, set(ledger.memories[user]))


Rows = tuple[list[tuple[Scope, int, str]], list[tuple[Scope, str, str]]]


async def api_rows(backend: Backend, ledger: Ledger) -> Rows:
    """The in-memory backend has no tables: read every known scope through the API."""
    messages = [
        (scope, m.seq or 0, m.content)
        for scope in ledger.messages
        for m in await backend.aget_messages(scope)
    ]
    memories = [
        (user, m.id, m.content)
        for user in ledger.memories
        for m in await backend.alist_memories(user)
    ]
    return messages, memories


def table_rows(backend: SQLBackend, owner: Any) -> Rows:
    """Every row of the message and memory tables, read as their owner."""
    m, t = backend.tables.messages, backend.tables.memories
    with owner.connect() as conn:
        messages = [
            (Scope(r.tenant_id, r.user_id, r.session_id), r.seq, r.content)
            for r in conn.execute(
                select(m.c.tenant_id, m.c.user_id, m.c.session_id, m.c.seq, m.c.content)
            )
        ]
        memories = [
            (Scope(r.tenant_id, r.user_id), r.id, r.content)
            for r in conn.execute(select(t.c.tenant_id, t.c.user_id, t.c.id, t.c.content))
        ]
    return messages, memories


def count_everything(rows: Rows, ledger: Ledger) -> None:
    """Every acknowledged write is there, once, in order, and nothing else is."""
    messages, memories = rows
    by_scope: dict[Scope, list[tuple[int, str]]] = {}
    for scope, seq, content in messages:
        by_scope.setdefault(scope, []).append((seq, content))
    assert set(by_scope) == set(ledger.messages)
    for scope, got in by_scope.items():
        seqs = [seq for seq, _ in got]
        assert len(set(seqs)) == len(seqs), scope
        ordered = [content for _, content in sorted(got)]
        if scope == SHARED:  # concurrent writers: any order, each once
            assert sorted(ordered) == sorted(ledger.messages[scope])
        else:
            assert ordered == ledger.messages[scope], scope
    assert len(messages) == TASKS * TASK_ROUNDS + THREADS * THREAD_ROUNDS * 2 + SHARED_WRITERS
    by_user: dict[Scope, dict[str, str]] = {}
    for user, mid, content in memories:
        assert mid not in by_user.setdefault(user, {}), (user, mid)
        by_user[user][mid] = content
    assert by_user == ledger.memories


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_interleaved_scopes_read_only_their_own_and_lose_nothing(
    make_backend: Callable[..., Backend], request: pytest.FixtureRequest, kind: str
) -> None:
    backend = make_backend(kind)  # cold: the first callers create the tables together
    ledger = Ledger()
    # a thread that dies before the start fails the test instead of hanging it
    start = threading.Barrier(THREADS + 1, timeout=60)
    workers = [
        threading.Thread(target=thread, args=(backend, i, ledger, start)) for i in range(THREADS)
    ]
    for worker in workers:
        worker.start()

    async def main() -> None:
        try:
            start.wait()  # the threads begin with the tasks
            throttled = Throttled(backend, limit=12)  # under the pool's 15 connections
            jobs = [task(throttled, i, ledger) for i in range(TASKS)]
            jobs += [shared_writer(throttled, i, ledger) for i in range(SHARED_WRITERS)]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures == [], failures[:3]
            for worker in workers:
                worker.join(120)
                assert not worker.is_alive()
            assert ledger.wrong == [], ledger.wrong[:5]
            if kind == "memory":
                count_everything(await api_rows(backend, ledger), ledger)
        finally:
            await backend.aclose()  # the async pool belongs to this loop

    asyncio.run(main())
    if isinstance(backend, SQLBackend):
        owner = (
            request.getfixturevalue("postgres_admin")
            if kind == "postgres"
            else create_engine(backend._target.sync_url, poolclass=NullPool)
        )
        count_everything(table_rows(backend, owner), ledger)
