"""SQLite writes a batch of memories as a few multi-row statements (120 rows each), not one
execution per row: the FTS5 trigger flushed the text index at every statement, 4x the
rest of a row's insert. Every row stays searchable by vector and by text, replaced rows
are re-indexed, and the last of two memories with one id wins, on both halves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _watch import engines, listening

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
N = 300  # three statements: 120 + 120 + 60


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SQLBackend]:
    store = SQLBackend(f"sqlite:///{tmp_path / 'rows.db'}")
    yield store
    store.close()


@contextmanager
def inserts(backend: SQLBackend) -> Iterator[list[int]]:
    """How many times SQLite runs the memories' INSERT meanwhile: once per statement, and
    once per row of an executemany."""
    runs: list[int] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if sql.startswith("INSERT INTO main.muxi_memories "):
            runs.append(len(params) if many else 1)

    with listening(engines(backend), "before_cursor_execute", before):
        yield runs


def batch(word: str) -> list[Memory]:
    return [Memory(f"m{i}", f"{word}{i} shared", {"i": i}, [1.0, i % 7, 0.5]) for i in range(N)]


def upsert(backend: SQLBackend, user: Scope, memories: list[Memory], half: str) -> None:
    if half == "sync":
        backend.upsert_memories(user, memories)
    else:
        asyncio.run(backend.aupsert_memories(user, memories))


def by_text(backend: SQLBackend, word: str) -> list[str]:
    return [m.id for m, _ in backend.search_memories(ALICE, None, 3, text=word, mode="text")]


@pytest.mark.parametrize("half", ["sync", "async"])
def test_a_batch_is_three_statements_and_every_row_is_indexed(
    backend: SQLBackend, half: str
) -> None:
    backend.setup()
    with inserts(backend) as seen:
        upsert(backend, ALICE, batch("alpha"), half)
    assert sum(seen) == 3
    assert backend.count_memories(ALICE) == N
    for i in (0, 119, 120, 239, 240, N - 1):  # each statement's first and last rows
        assert by_text(backend, f"alpha{i}") == [f"m{i}"]
    upsert(backend, BOB, batch("alpha"), half)  # the same ids, another user
    with inserts(backend) as seen:
        upsert(backend, ALICE, batch("beta"), half)  # every row replaced
    assert sum(seen) == 3
    assert by_text(backend, "alpha130") == [] and by_text(backend, "beta130") == ["m130"]
    assert {m.content for m in backend.get_memories(BOB, ["m130"])} == {"alpha130 shared"}
    assert len(backend.search_memories(ALICE, [1.0, 0.0, 0.5], k=N + 5)) == N


@pytest.mark.parametrize("half", ["sync", "async"])
def test_the_last_of_two_memories_with_one_id_wins(backend: SQLBackend, half: str) -> None:
    first, last = Memory("dup", "first", {}, [1.0, 0.0]), Memory("dup", "last", {}, [0.0, 1.0])
    upsert(backend, ALICE, [first, Memory("other", "x", {}, [1.0, 1.0]), last], half)
    assert [m.content for m in backend.get_memories(ALICE, ["dup"])] == ["last"]
    assert by_text(backend, "first") == [] and by_text(backend, "last") == ["dup"]
