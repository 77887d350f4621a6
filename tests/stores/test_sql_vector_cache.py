"""SQLite keeps a large user's vectors in memory only while the database says they hold.

Every write below that must be seen comes from somewhere the searching backend cannot hear
about: a second backend on the same file, or the plain ``sqlite3`` module (another process,
the command line). Each check runs on both halves.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.similarity import (
    best_first,
    cosines,
    row_norms,
    screen_scale,
    top_float32,
)
from muxi_isolation.stores.sql import SCHEMA_VERSION, SQLBackend, _schema
from muxi_isolation.stores.sql._vector_cache import Kept, VectorCache

DIM = 8
ALICE = Scope("tenant_a", "alice")
ALICE_B = Scope("tenant_b", "alice")  # same user id, other tenant
ROWS = 300


def vectors(seed: int, n: int = ROWS) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(n)]


def reference(query: list[float], rows: dict[str, list[float]], k: int) -> list[str]:
    """numpy's exact ranking over float32 values (what SQLite stores), ties by id."""
    ids = sorted(rows)
    matrix = np.asarray([rows[i] for i in ids], dtype=np.float32)
    return [ids[i] for i in best_first(cosines(query, matrix), k, ids.__getitem__)]


def both_halves(backend: SQLBackend, user: Scope, query: list[float], k: int) -> list[str]:
    sync = [m.id for m, _ in backend.search_memories(user, query, k)]
    found = asyncio.run(backend.asearch_memories(user, query, k))
    assert [m.id for m, _ in found] == sync
    return sync


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


@pytest.fixture
def searcher(path: Path):
    backend = SQLBackend(f"sqlite:///{path}")
    yield backend
    backend.close()


@pytest.fixture
def writer(path: Path, searcher: SQLBackend):
    searcher.setup()
    backend = SQLBackend(f"sqlite:///{path}")  # its own engine: as another process
    yield backend
    backend.close()


def load(backend: SQLBackend, user: Scope, seed: int) -> dict[str, list[float]]:
    rows = {f"m{i:03d}": v for i, v in enumerate(vectors(seed))}
    backend.upsert_memories(user, [Memory(i, "x", {}, v) for i, v in rows.items()])
    return rows


def test_a_kept_copy_matches_the_rows_until_they_change(
    searcher: SQLBackend, writer: SQLBackend, path: Path
) -> None:
    rows = load(writer, ALICE, 1)
    query = vectors(99, 1)[0]
    assert both_halves(searcher, ALICE, query, 10) == reference(query, rows, 10)
    assert len(searcher.vectors.cache) == 1
    with sqlite3.connect(path) as raw:  # behind the backend's back
        raw.execute("UPDATE muxi_memories SET embedding = NULL")
    assert both_halves(searcher, ALICE, query, 10) == []  # the triggers moved the version


@pytest.mark.parametrize("how", ["another backend", "plain sqlite3"])
def test_writes_from_elsewhere_are_seen_at_once(
    searcher: SQLBackend, writer: SQLBackend, path: Path, how: str
) -> None:
    rows = load(writer, ALICE, 2)
    other = load(writer, ALICE_B, 3)
    query = vectors(98, 1)[0]
    assert both_halves(searcher, ALICE, query, 5) == reference(query, rows, 5)
    assert both_halves(searcher, ALICE_B, query, 5) == reference(query, other, 5)
    target = [2.0 * x for x in query]  # the best possible match
    if how == "another backend":
        writer.upsert_memories(ALICE, [Memory("m007", "x", {}, target)])
        writer.delete_memories(ALICE, ids=["m008"])
        writer.upsert_memories(ALICE, [Memory("new", "x", {}, [-x for x in query])])
    else:
        blob = struct.pack(f"{DIM}f", *target)
        with sqlite3.connect(path) as raw:
            mine = "tenant_id = 'tenant_a' AND user_id = 'alice' AND id = ?"
            raw.execute(f"UPDATE muxi_memories SET embedding = ? WHERE {mine}", (blob, "m007"))
            raw.execute(f"DELETE FROM muxi_memories WHERE {mine}", ("m008",))
    rows["m007"] = target
    del rows["m008"]
    if how == "another backend":
        rows["new"] = [-x for x in query]
    got = both_halves(searcher, ALICE, query, 5)
    assert got[0] == "m007" and "m008" not in got
    assert got == reference(query, rows, 5)
    assert both_halves(searcher, ALICE_B, query, 5) == reference(query, other, 5)  # untouched


def test_forgetting_drops_the_copy_and_the_version(
    searcher: SQLBackend, writer: SQLBackend, path: Path
) -> None:
    load(writer, ALICE, 4)
    other = load(writer, ALICE_B, 5)
    query = vectors(97, 1)[0]
    both_halves(searcher, ALICE, query, 3)
    both_halves(searcher, ALICE_B, query, 3)
    assert len(searcher.vectors.cache) == 2
    searcher.forget_user(ALICE)
    assert len(searcher.vectors.cache) == 1  # Alice's copy is gone from this process
    with sqlite3.connect(path) as raw:
        kept = raw.execute("SELECT tenant_id, user_id FROM muxi_memory_versions").fetchall()
    assert kept == [("tenant_b", "alice")]  # no trace of the forgotten user's id
    assert both_halves(searcher, ALICE, query, 3) == []
    assert both_halves(searcher, ALICE_B, query, 3) == reference(query, other, 3)
    load(writer, ALICE, 6)  # written again: a new version, never the old copy's
    writer.forget_tenant("tenant_b")  # by another process: this one's copy goes on next use
    assert both_halves(searcher, ALICE_B, query, 3) == []
    assert len(searcher.vectors.cache) == 0


def test_a_version_6_database_is_upgraded_and_its_users_get_versions(path: Path) -> None:
    old = SQLBackend(f"sqlite:///{path}")
    rows = load(old, ALICE, 7)
    with old._admin_engines()[0].begin() as conn:  # undo 6 -> 7
        for suffix in ("insert", "delete", "update"):
            conn.execute(text(f"DROP TRIGGER main.muxi_memories_version_{suffix}"))
        conn.execute(text("DROP TABLE main.muxi_memory_versions"))
        v = old.tables.version
        conn.execute(v.update().where(v.c.component == _schema.COMPONENT).values(version=6))
    old.close()
    new = SQLBackend(f"sqlite:///{path}")
    writer = SQLBackend(f"sqlite:///{path}")
    try:
        new.setup()
        with new._admin_engines()[0].connect() as conn:
            assert _schema.read_version(conn, new.tables) == SCHEMA_VERSION
        query = vectors(96, 1)[0]
        assert both_halves(new, ALICE, query, 4) == reference(query, rows, 4)
        assert len(new.vectors.cache) == 1  # the backfilled version let it keep a copy
        writer.delete_memories(ALICE, ids=reference(query, rows, 1))
        del rows[reference(query, rows, 1)[0]]
        assert both_halves(new, ALICE, query, 4) == reference(query, rows, 4)
    finally:
        new.close()
        writer.close()


def test_filtered_searches_keep_nothing(searcher: SQLBackend, writer: SQLBackend) -> None:
    rows = {f"m{i}": v for i, v in enumerate(vectors(8, 5))}
    writer.upsert_memories(ALICE, [Memory(i, "x", {"n": int(i[1:])}, v) for i, v in rows.items()])
    query = vectors(95, 1)[0]
    found = searcher.search_memories(ALICE, query, 3, filter={"n": {"$gte": 2}})
    assert [m.id for m, _ in found] == reference(query, {i: rows[i] for i in ("m2", "m3", "m4")}, 3)
    assert len(searcher.vectors.cache) == 0
    assert both_halves(searcher, ALICE, query, 3) == reference(query, rows, 3)
    assert len(searcher.vectors.cache) == 1  # a small user is kept too: one version row read


def test_a_user_without_vectors_answers_nothing_at_any_dimension(searcher: SQLBackend) -> None:
    searcher.upsert_memories(ALICE, [Memory("plain", "no embedding")])
    assert both_halves(searcher, ALICE, [1.0] * DIM, 3) == []
    assert both_halves(searcher, ALICE, [1.0, 0.0], 3) == []  # kept: still no rows to refuse


def test_the_cache_holds_at_most_its_bytes_least_recently_used_out_first() -> None:
    def kept(version: int) -> Kept:
        matrix = np.zeros((100, DIM), dtype=np.float32)
        return Kept(version, [f"m{i}" for i in range(100)], matrix, row_norms(matrix))

    cache = VectorCache(max_bytes=int(kept(0).nbytes * 2.5))
    for user in "abc":
        cache.put(("t", user), kept(1))
        if user == "b":
            assert cache.get(("t", "a"), 1) is not None  # "a" is now the most recent
    assert cache.get(("t", "b"), 1) is None and cache.get(("t", "a"), 1) is not None
    assert cache.get(("t", "a"), 2) is None and cache.get(("t", "a"), 1) is None  # stale: out
    cache.put(("t", "huge"), Kept(1, [], np.zeros((10_000, DIM), np.float32), np.zeros(10_000)))
    assert cache.get(("t", "huge"), 1) is None  # never holds more than its bytes


def test_the_float32_screen_scores_rows_and_queries_past_float32_exactly() -> None:
    """A row whose float32 dot overflows (a norm past 1e30), a query whose squared norm
    does (past 1e154): scored in float64 as ``cosines`` scores them, not screened."""
    matrix = np.ones((20, 8), dtype=np.float32)
    matrix[:, 7] = np.arange(20, dtype=np.float32)  # row 0 is the query's direction
    matrix[1:4, :7] = 3e38  # float32 dots past its largest value
    ids = [f"m{i:02d}" for i in range(20)]
    for query in ([1.0] * 7 + [0.0], [1e300] * 7 + [0.0]):
        for rows in (matrix, matrix[4:], matrix[4:] * np.float32(1e20)):  # 1e320: float64's
            exact = cosines(query, rows)
            want = [(i, float(exact[i])) for i in best_first(exact, 3, ids.__getitem__)]
            norms = row_norms(rows)
            assert top_float32(query, rows, norms, 3, ids.__getitem__, screen_scale(norms)) == want


near = st.floats(-1, 1, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_the_float32_screen_returns_the_exact_ranking_to_the_bit(data) -> None:
    """Near-ties, exact ties, zero, tiny and huge vectors: the same positions and scores,
    with and without the rows' ``screen_scale``."""
    dim = data.draw(st.integers(1, 24))
    base = np.asarray(data.draw(st.lists(near, min_size=dim, max_size=dim)))
    n = data.draw(st.integers(1, 120))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kind = data.draw(st.sampled_from(["spread", "near", "ties", "scales"]))
    if kind == "spread":
        matrix = rng.normal(size=(n, dim))
    elif kind == "near":
        matrix = base + rng.normal(scale=1e-6, size=(n, dim))
    elif kind == "ties":
        matrix = np.tile(base, (n, 1)) * rng.integers(0, 3, size=(n, 1))
    else:
        matrix = rng.normal(size=(n, dim)) * 10.0 ** rng.integers(-40, 38, size=(n, 1))
    matrix = matrix.astype(np.float32)
    scale = 10.0 ** data.draw(st.integers(-45, 40) | st.sampled_from([-170, 170]))  # |q|^2: 0, inf
    query = ((base + rng.normal(scale=1e-3, size=dim)) * scale).tolist()
    k = data.draw(st.integers(1, 15))
    ids = [f"m{i:03d}" for i in rng.permutation(n)]
    exact = cosines(query, matrix)
    want = [(i, float(exact[i])) for i in best_first(exact, k, ids.__getitem__)]
    norms = row_norms(matrix)
    assert top_float32(query, matrix, norms, k, ids.__getitem__) == want
    assert top_float32(query, matrix, norms, k, ids.__getitem__, screen_scale(norms)) == want
