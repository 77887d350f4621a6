"""Quotas under concurrent writers: many threads, or many asyncio tasks, write at once for
one user at its limit, and exactly the limit's worth pass, on every backend; another user
writing meanwhile is never refused. On PostgreSQL the count is serialized by an advisory
lock per (tenant, user): a writer of another user never waits on it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from muxi_isolation import Backend, Memory, QuotaExceeded, Scope, SessionRecord
from muxi_isolation.quotas import Limits, lock_key

LIMIT = 4
WRITERS = 10
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
CROWDED = Scope("tenant_a", "crowded")
OTHER = Scope("tenant_a", "other")
LIMITS = Limits(max_sessions_per_user=LIMIT, max_memories_per_user=LIMIT)


def record(user: Scope, sid: str) -> SessionRecord:
    return SessionRecord(sid, user, NOW, NOW, NOW + timedelta(hours=1))


def session_write(backend: Backend, user: Scope, i: int) -> Callable[[], Any]:
    return lambda: backend.insert_session(user, record(user, f"s{i}"))


def memory_write(backend: Backend, user: Scope, i: int) -> Callable[[], Any]:
    return lambda: backend.upsert_memories(user, [Memory(f"m{i}", "x")])


async def asession_write(backend: Backend, user: Scope, i: int) -> Any:
    return await backend.ainsert_session(user, record(user, f"s{i}"))


async def amemory_write(backend: Backend, user: Scope, i: int) -> Any:
    return await backend.aupsert_memories(user, [Memory(f"m{i}", "x")])


def held(backend: Backend, kind: str, user: Scope) -> int:
    if kind == "sessions":
        return len(backend.list_sessions(user))
    return backend.count_memories(user)


@pytest.mark.parametrize("kind", ["sessions", "memories"])
def test_threads_at_the_limit(backend: Backend, kind: str) -> None:
    backend.limits = LIMITS
    write = session_write if kind == "sessions" else memory_write
    jobs = [(CROWDED, i) for i in range(WRITERS)] + [(OTHER, i) for i in range(LIMIT)]
    start = threading.Barrier(len(jobs))
    outcomes: dict[tuple[Scope, int], str] = {}

    def run(user: Scope, i: int) -> None:
        start.wait()
        try:
            write(backend, user, i)()
            outcomes[(user, i)] = "ok"
        except QuotaExceeded:
            outcomes[(user, i)] = "refused"
        except Exception as exc:  # anything else fails the test below, with its name
            outcomes[(user, i)] = repr(exc)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    crowded = [outcomes[(CROWDED, i)] for i in range(WRITERS)]
    assert sorted(crowded) == ["ok"] * LIMIT + ["refused"] * (WRITERS - LIMIT)
    assert [outcomes[(OTHER, i)] for i in range(LIMIT)] == ["ok"] * LIMIT
    assert held(backend, kind, CROWDED) == LIMIT
    assert held(backend, kind, OTHER) == LIMIT


@pytest.mark.parametrize("kind", ["sessions", "memories"])
async def test_tasks_at_the_limit(backend: Backend, kind: str) -> None:
    backend.limits = LIMITS
    write = asession_write if kind == "sessions" else amemory_write
    crowded = [write(backend, CROWDED, i) for i in range(WRITERS)]
    other = [write(backend, OTHER, i) for i in range(LIMIT)]
    results = await asyncio.gather(*crowded, *other, return_exceptions=True)
    mine, theirs = results[:WRITERS], results[WRITERS:]
    assert sum(isinstance(r, QuotaExceeded) for r in mine) == WRITERS - LIMIT
    assert all(not isinstance(r, BaseException) for r in theirs), theirs
    assert [r for r in mine if isinstance(r, BaseException)] == [
        r for r in mine if isinstance(r, QuotaExceeded)
    ]
    assert held(backend, kind, CROWDED) == LIMIT
    assert held(backend, kind, OTHER) == LIMIT


def test_the_postgres_lock_is_per_user(make_backend: Any, postgres_admin: Any) -> None:
    """A transaction holding one user's quota lock delays that user's counted writes only."""
    backend = make_backend("postgres")
    backend.limits = LIMITS
    backend.setup()
    done: dict[str, float] = {}

    def insert(user: Scope) -> None:
        backend.insert_session(user, record(user, "s"))
        done[user.user_id] = time.monotonic()

    with postgres_admin.connect() as conn, conn.begin():
        key = lock_key("max_sessions_per_user", CROWDED.tenant_id, CROWDED.user_id)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        waiting = threading.Thread(target=insert, args=(CROWDED,))
        waiting.start()
        insert(OTHER)  # not blocked by the crowded user's lock
        time.sleep(0.5)
        assert "other" in done and "crowded" not in done
        released = time.monotonic()
    waiting.join(timeout=30)
    assert done["crowded"] >= released
