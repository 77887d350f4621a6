"""PostgreSQL upserts of memories as one short statement over arrays (``_bulk``).

A batch goes as one ``INSERT ... SELECT FROM unnest(...)`` with a handful of parameters
(not 8 a row, which psycopg re-parsed on every call), and reads back exactly as written:
odd text, nested metadata, missing embeddings, replaced rows, both halves, both precisions.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope("tenant_a", "alice", "s1")
BOB = Scope("tenant_a", "bob")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def batch(n: int, tag: str) -> list[Memory]:
    out = []
    for i in range(n):
        vector = None if i % 7 == 3 else [float(i % 5), 1.0, -0.5, i / 1000]
        meta = {"i": i, "tag": tag, "nested": {"q": "it's 100%", "l": [1, None, "x"]}}
        text = f"memory {i} {tag} 'quoted' %s %(x)s \\ ünï"
        out.append(Memory(f"m{i}", text, meta, vector, WHEN + timedelta(seconds=i)))
    return out


@pytest.fixture(params=["sync", "async"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def upsert(store: SQLBackend, way: str, scope: Scope, memories: list[Memory]) -> None:
    if way == "sync":
        store.upsert_memories(scope, memories)
    else:
        asyncio.run(store.aupsert_memories(scope, memories))


def read(store: SQLBackend, scope: Scope, ids: list[str]) -> dict[str, Memory]:
    return {m.id: m for m in store.get_memories(scope.user(), ids)}


@pytest.mark.parametrize("precision", ["full", "half"])
def test_a_batch_reads_back_as_written_and_replaces_rows(
    make_backend: Any, way: str, precision: str
) -> None:
    store: SQLBackend = make_backend(
        "postgres", embedding_dimension=4, embedding_precision=precision
    )
    first = batch(300, "first")
    upsert(store, way, ALICE, first)
    upsert(store, way, BOB, batch(5, "bob"))
    got = read(store, ALICE, [m.id for m in first])
    assert len(got) == 300
    for m in first:
        g = got[m.id]
        assert (g.content, g.metadata, g.created_at) == (m.content, m.metadata, m.created_at)
        assert g.scope == ALICE.user() or g.scope == ALICE
        if m.embedding is None:
            assert g.embedding is None
        else:
            assert g.embedding == pytest.approx(m.embedding, rel=1e-3)
    again = [Memory("m1", "changed", {"v": 2}, None), Memory("m3", "now", {}, [1.0, 0, 0, 0])]
    upsert(store, way, ALICE, again)
    got = read(store, ALICE, ["m1", "m3"])
    assert (got["m1"].content, got["m1"].metadata, got["m1"].embedding) == (
        "changed",
        {"v": 2},
        None,
    )
    assert got["m3"].embedding == [1.0, 0.0, 0.0, 0.0]
    assert len(read(store, BOB, [f"m{i}" for i in range(300)])) == 5  # Bob's own five only


def test_a_batch_is_one_short_statement(make_backend: Any) -> None:
    store: SQLBackend = make_backend("postgres", embedding_dimension=4)
    store.upsert_memories(ALICE, batch(1, "warm"))
    sent: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "INSERT INTO" in statement and "memories" in statement:
            sent.append((statement, params))

    event.listen(store._engine, "before_cursor_execute", seen)
    store.upsert_memories(ALICE, batch(1000, "bulk"))
    [(statement, params)] = sent
    assert len(params) <= 8 and len(statement) < 1000
