"""Searches keep a user's vectors between calls (the memory backend's matrix, SQLite's
kept copy): every write of the user's memories (add, replace, delete, forget) is seen by
the next search, filtered or not, on every backend and both halves, and another user's
writes change nothing. The vectors are exact in float32, so every backend ranks alike."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.base import Backend
from muxi_isolation.stores.similarity import best_first, cosines

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
DIM = 6


def vector(rng: random.Random) -> list[float]:
    return [rng.randint(-8, 8) / 8 for _ in range(DIM)]  # exact in float32


def expected(rows: dict[str, tuple[list[float], int]], query: list[float], k: int) -> list[str]:
    ids = sorted(rows)
    if not ids:
        return []
    scores = cosines(query, np.asarray([rows[i][0] for i in ids]))
    return [ids[j] for j in best_first(scores, k, ids.__getitem__)]


def search(backend: Backend, query: list[float], k: int, flt: object, half: str) -> list[str]:
    if half == "sync":
        found = backend.search_memories(ALICE, query, k, filter=flt)
    else:
        found = asyncio.run(backend.asearch_memories(ALICE, query, k, filter=flt))
    return [m.id for m, _ in found]


@pytest.mark.parametrize("half", ["sync", "async"])
def test_each_write_is_seen_by_the_next_search(backend: Backend, half: str) -> None:
    rng = random.Random(7)
    rows: dict[str, tuple[list[float], int]] = {}  # Alice's, as stored: vector, group
    backend.upsert_memories(BOB, [Memory("b0", "bob's", {"g": 0}, vector(rng))])
    for step in range(40):
        action = rng.choice(["add", "add", "replace", "delete", "bob", "search"])
        if action == "add" or (action in ("replace", "delete") and not rows):
            new = {f"m{step}-{i}": (vector(rng), rng.randint(0, 1)) for i in range(3)}
            backend.upsert_memories(
                ALICE, [Memory(i, "x", {"g": g}, v) for i, (v, g) in new.items()]
            )
            rows.update(new)
        elif action == "replace":
            victim = rng.choice(sorted(rows))
            rows[victim] = (vector(rng), rng.randint(0, 1))
            v, g = rows[victim]
            backend.upsert_memories(ALICE, [Memory(victim, "y", {"g": g}, v)])
        elif action == "delete":
            victim = rng.choice(sorted(rows))
            del rows[victim]
            backend.delete_memories(ALICE, ids=[victim])
        elif action == "bob":
            backend.upsert_memories(BOB, [Memory(f"m{step}", "bob", {"g": 1}, vector(rng))])
        query, k = vector(rng), rng.randint(1, 8)
        assert search(backend, query, k, None, half) == expected(rows, query, k), step
        mine = {i: r for i, r in rows.items() if r[1] == 1}
        assert search(backend, query, k, {"g": 1}, half) == expected(mine, query, k), step
    backend.forget_user(ALICE)
    assert search(backend, vector(rng), 5, None, half) == []
