"""The numpy ranker gives the pure-Python ranking: same ids, same order, ties by id.

The reference is the loop every exact search ran before (``cosine_normed`` per vector, a
full sort by ``(-score, id)``). On vectors of small integers every sum is exact, so the
two must agree to the bit, scores included; on arbitrary floats they may differ in the
last bits, so only scores equal to 1e-12 may swap places.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxi_isolation import InvalidInput, Memory, Scope
from muxi_isolation.stores.graph import StoreItem, rank_items
from muxi_isolation.stores.similarity import best_first, cosine_normed, cosines, norm, rank

Rows = list[tuple[str, list[float]]]


def reference(query: Sequence[float], rows: Rows, k: int) -> list[tuple[str, float]]:
    """The pure-Python ranking the searches used before the numpy one."""
    query_norm = norm(query)
    scored = [(i, cosine_normed(query, query_norm, v)) for i, v in rows]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored[:k]


small_ints = st.integers(-4, 4).map(float)


@st.composite
def integer_case(draw: st.DrawFn) -> tuple[list[float], Rows, int]:
    """Few distinct small-integer vectors, repeated and zero: many exact ties."""
    dim = draw(st.integers(1, 12))
    vector = st.lists(small_ints, min_size=dim, max_size=dim)
    pool = draw(st.lists(vector, min_size=1, max_size=6))
    picks = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=40))
    ids = draw(st.permutations([f"m{i:02d}" for i in range(len(picks))]))
    return draw(vector), list(zip(ids, picks, strict=True)), draw(st.integers(0, 45))


@settings(max_examples=400, deadline=None, database=None)
@given(case=integer_case())
def test_the_ranker_is_the_pure_python_ranking_to_the_bit(case) -> None:
    query, rows, k = case
    got = rank(query, [v for _, v in rows], k, lambda i: rows[i][0])
    assert [(rows[i][0], s) for i, s in got] == reference(query, rows, k)


@settings(max_examples=200, deadline=None, database=None)
@given(
    dim=st.integers(1, 40),
    data=st.data(),
)
def test_the_ranker_matches_on_arbitrary_floats_up_to_rounding(dim: int, data) -> None:
    floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    vector = st.lists(floats, min_size=dim, max_size=dim)
    query = data.draw(vector)
    rows = [(f"m{i:03d}", v) for i, v in enumerate(data.draw(st.lists(vector, max_size=30)))]
    k = data.draw(st.integers(1, 35))
    got = [(rows[i][0], s) for i, s in rank(query, [v for _, v in rows], k, lambda i: rows[i][0])]
    want = reference(query, rows, k)
    assert len(got) == len(want)
    exact = dict(reference(query, rows, len(rows)))
    for (got_id, got_score), (want_id, want_score) in zip(got, want, strict=True):
        assert got_score == pytest.approx(want_score, rel=1e-12, abs=1e-12)
        if got_id != want_id:  # only a near-tie may swap
            assert exact[got_id] == pytest.approx(want_score, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dim", [*range(1, 41), 383, 384, 1536])
def test_equal_vectors_score_exactly_equal_wherever_they_sit(dim: int) -> None:
    """So a tie falls to the id: BLAS (``@``) sums a kernel's leftover rows differently."""
    rng = np.random.default_rng(dim)
    matrix = rng.normal(size=(5000, dim)).astype(np.float32)
    twins = rng.choice(5000, size=50, replace=False)
    matrix[twins] = matrix[twins[0]]
    scores = cosines(rng.normal(size=dim).tolist(), matrix)
    assert len(set(scores[twins].tolist())) == 1


def test_best_first_takes_every_tie_at_the_cut() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    ids = ["d", "z", "b", "c", "a"]
    assert best_first(scores, 2, ids.__getitem__) == [1, 2]  # "b" wins the tie for 2nd
    assert best_first(scores, 0, ids.__getitem__) == []


def test_zero_vectors_score_zero_and_lengths_must_match() -> None:
    assert cosines([1.0, 0.0], np.zeros((2, 2), dtype=np.float32)).tolist() == [0.0, 0.0]
    with pytest.raises(InvalidInput, match="3 dimensions, the query 2"):
        rank([1.0, 0.0], [[1.0, 0.0], [1.0, 0.0, 0.0]], 1, str)


@st.composite
def item_case(draw: st.DrawFn) -> tuple[list[float], list[StoreItem], int, int]:
    dim = draw(st.integers(1, 6))
    vector = st.lists(small_ints, min_size=dim, max_size=dim)
    fields = st.dictionaries(st.sampled_from(["a", "b", "c"]), vector, max_size=3)
    items = [
        StoreItem((ns,), key, {}, embeddings=draw(fields) or None)
        for ns, key in draw(
            st.lists(st.tuples(st.sampled_from("xy"), st.sampled_from("pqrs")), unique=True)
        )
    ]
    return draw(vector), items, draw(st.integers(0, 10)), draw(st.integers(0, 4))


@settings(max_examples=300, deadline=None, database=None)
@given(case=item_case())
def test_the_store_ranking_is_the_pure_python_one(case) -> None:
    """LangGraph store search: an item scores its best field; unscored items come last."""
    query, items, limit, offset = case
    scored = [
        (item, max(cosine_normed(query, norm(query), v) for v in item.embeddings.values()))
        for item in items
        if item.embeddings
    ]
    scored.sort(key=lambda pair: (-pair[1], pair[0].namespace, pair[0].key))
    want = [*scored, *((item, None) for item in items if not item.embeddings)]
    assert rank_items(items, query, limit, offset) == want[offset : offset + limit]


_users = itertools.count()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_backend_search_is_the_pure_python_ranking(make_backend, kind: str) -> None:
    """Memory and SQLite rank in Python: both halves give the reference, scores to the bit."""
    backend = make_backend(kind)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(case=integer_case())
    def check(case) -> None:
        query, rows, k = case
        user = Scope("t", f"u{next(_users)}")
        backend.upsert_memories(user, [Memory(i, "x", {}, v) for i, v in rows])
        backend.upsert_memories(Scope("t", f"u{next(_users)}"), [Memory("m00", "y", {}, query)])
        want = reference(query, rows, k)
        for found in (
            backend.search_memories(user, query, k),
            _run(backend.asearch_memories(user, query, k)),
        ):
            assert [(m.id, s) for m, s in found] == want

    check()


def _run(coroutine):  # hypothesis drives a sync test; the async half runs on its own loop
    import asyncio

    return asyncio.run(coroutine)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_large_users_search_is_far_faster_than_the_pure_python_loop(
    make_backend, kind: str
) -> None:
    """The fast path is taken: at 3,000 rows of 384 dimensions the loop took about as long
    as the old search did (every vector decoded to floats and scored in Python)."""
    backend = make_backend(kind)
    user = Scope("t", "big")
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, 384)).astype(np.float32).tolist()
    rows = [(f"m{i:04d}", v) for i, v in enumerate(vectors)]
    backend.upsert_memories(user, [Memory(i, "x", {}, v) for i, v in rows])
    query = rng.normal(size=384).tolist()

    def best_of_three(fn) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    loop = best_of_three(lambda: reference(query, rows, 10))
    search = best_of_three(lambda: backend.search_memories(user, query, 10))
    assert [m.id for m, _ in backend.search_memories(user, query, 10)] == [
        i for i, _ in reference(query, rows, 10)
    ]
    assert search < loop / 3, (search, loop)
