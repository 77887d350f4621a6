"""Cosine similarity for the exact searches that do not run in SQL: one ranker for the memory
backend, SQLite and the LangGraph store, so rankings agree everywhere.

A zero vector scores 0, and vectors of different lengths are an error, never a silent
truncation. Scores are float64 over the stored values, as the pure-Python loop computed them
(a float32 value is exact in float64), ranked best first with ties broken by the caller's
key (the id).

Rows are scored with numpy's ``einsum``, which sums each row's terms in one fixed order, so
equal vectors score exactly equal and a tie always falls to the id. Not ``@``: BLAS sums a
kernel's leftover rows in another order than the rest (equal vectors then differ in the
last bit), and its threads fight over a small machine's cores (8 ms instead of 0.5 ms
measured on 2 shared cores).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import mul
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInput

__all__ = [
    "best_first",
    "cosine",
    "cosine_normed",
    "cosines",
    "mismatch",
    "norm",
    "rank",
    "row_norms",
    "screen_scale",
    "top_exact",
    "top_float32",
]

Matrix = npt.NDArray[np.floating[Any]]
Scores = npt.NDArray[np.float64]

_BLOCK = 4096  # rows scored at a time: a float64 copy of a block stays in cache
_TINY = 1e-30  # norms within [_TINY, 1 / _TINY]: the float32 screen's bound holds
_SORTED = 64  # scores up to which sorting them all beats a partition first


def mismatch(vector: int, query: int) -> InvalidInput:
    return InvalidInput(f"embedding has {vector} dimensions, the query {query}", field="embedding")


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(map(mul, vector, vector)))


def cosine_normed(query: Sequence[float], query_norm: float, vector: Sequence[float]) -> float:
    """Cosine similarity with the query's norm computed once for a whole scan."""
    if len(vector) != len(query):
        raise mismatch(len(vector), len(query))
    denominator = query_norm * norm(vector)
    return sum(map(mul, query, vector)) / denominator if denominator else 0.0


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return cosine_normed(a, norm(a), b)


def row_norms(matrix: Matrix) -> Scores:
    """Each row's norm in float64, exactly as ``cosines`` computes it."""
    out = np.empty(matrix.shape[0], dtype=np.float64)
    with np.errstate(all="ignore"):
        for start in range(0, matrix.shape[0], _BLOCK):
            block = matrix[start : start + _BLOCK].astype(np.float64, copy=False)
            out[start : start + _BLOCK] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def _query_norm(q: Scores) -> float:
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.einsum("j,j->", q, q)))


def cosines(query: Sequence[float] | Scores, matrix: Matrix, norms: Scores | None = None) -> Scores:
    """The cosine similarity of ``query`` with each row of ``matrix`` (rows x dimensions);
    ``norms``: the rows' ``row_norms``, when kept from an earlier call."""
    q = np.asarray(query, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(q):
        raise mismatch(matrix.shape[-1], len(q))
    if norms is None:
        norms = row_norms(matrix)
    return _cosines(q, _query_norm(q), matrix, norms)


def _cosines(q: Scores, q_norm: float, matrix: Matrix, norms: Scores) -> Scores:
    out = np.empty(matrix.shape[0], dtype=np.float64)
    with np.errstate(all="ignore"):  # 0/0 for a zero vector; overflow of absurd magnitudes
        for start in range(0, matrix.shape[0], _BLOCK):
            block = matrix[start : start + _BLOCK].astype(np.float64, copy=False)
            dots = np.einsum("ij,j->i", block, q)
            denominators = norms[start : start + _BLOCK] * q_norm
            out[start : start + _BLOCK] = np.where(denominators != 0, dots / denominators, 0.0)
    out[np.isnan(out)] = 0.0  # inf/inf: scored as pgvector's NaN distance is (0)
    return out


def screen_scale(norms: Scores) -> npt.NDArray[np.float32] | None:
    """Each row's 1/norm in float32, for ``top_float32`` to screen rows with one multiply;
    ``None`` when some norm is outside [1e-30, 1e30] (zero, tiny, huge or not finite)."""
    if len(norms) == 0 or not (norms.min() >= _TINY and norms.max() <= 1 / _TINY):
        return None
    return (1.0 / norms).astype(np.float32)


def top_float32(
    query: Sequence[float],
    matrix: Matrix,
    norms: Scores,
    k: int,
    key: Callable[[int], Any],
    scale: npt.NDArray[np.float32] | None = None,
) -> list[tuple[int, float]]:
    """``best_first`` over ``cosines`` (the same positions and scores, to the bit), for a
    float32 ``matrix``: every row is scored in float32 (no float64 copy, twice the SIMD
    lanes), and only the rows that could still be in the top ``k`` are scored exactly.

    A float32 dot product of d terms is off by at most (d + 2) units of float32 rounding
    times sum |q_j v_j| <= |q| |v|, so no cosine moves by more than ``slack``: a row whose
    fast score is ``2 * slack`` below the k-th best fast score cannot be in the exact top k.
    Where the bound does not hold (overflow, tiny norms), the rows are scored exactly.

    With ``scale`` (the rows' ``screen_scale``) and a query norm within [1e-30, 1e30], the
    fast score is the float32 dot with the unit query times the row's float32 1/norm: all
    float32, one pass after the dot. No value can overflow, underflow costs at most an
    absolute 1e-12, and no exact score is zero, NaN or infinite. The roundings of 1/norm and
    of the product are two more units (the unit query's float64 one is in the 1e-10); two
    more cover the cut's rounding to float32 (at most one unit, the cut being below 2).
    """
    q = np.asarray(query, dtype=np.float64)
    if k <= 0 or len(matrix) == 0:  # no rows: nothing of another length either
        return []
    if matrix.ndim != 2 or matrix.shape[1] != len(q):
        raise mismatch(matrix.shape[-1], len(q))
    n, d = matrix.shape
    q_norm = _query_norm(q)
    if n > k and scale is not None and _TINY <= q_norm <= 1 / _TINY and d < 2**22:
        fast = _dots32(matrix, (q / q_norm).astype(np.float32))
        np.multiply(fast, scale, out=fast)  # |fast| <= 1.01: no overflow
        unit = 2.0**-24 * (d + 6)
        slack = 1.01 * unit / (1 - unit) + 1e-10
        cut = np.float32(float(np.partition(fast, -k)[-k]) - 2 * slack)  # the k-th best's
        candidates = np.flatnonzero(fast >= cut)
        # ``_cosines``' arithmetic, less its guards: no denominator is zero, no dot overflows
        block = matrix[candidates].astype(np.float64)
        exact = np.einsum("ij,j->i", block, q) / (norms[candidates] * q_norm)
    else:
        candidates = np.arange(n) if n <= k else _screened(q, q_norm, matrix, norms, k)
        exact = _cosines(q, q_norm, matrix[candidates], norms[candidates])
    best = best_first(exact, k, lambda j: key(int(candidates[j])))
    return [(int(candidates[j]), float(exact[j])) for j in best]


def _screened(
    q: Scores, q_norm: float, matrix: Matrix, norms: Scores, k: int
) -> npt.NDArray[np.intp]:
    """``top_float32``'s candidates without a usable ``scale``: the float32 dot divided by
    the float64 denominators, every row scored exactly where the bound does not hold."""
    n, d = matrix.shape
    with np.errstate(all="ignore"):
        q32 = q.astype(np.float32)
        denominators = norms * q_norm
        fast = np.divide(_dots32(matrix, q32), denominators)  # float64: one pass, no copy
    unit = 2.0**-24 * (d + 2)
    slack = 1.01 * unit / (1 - unit) + 1e-10  # 1e-10: float64 rounding and float32 underflow
    normal = denominators >= 1e-30  # not zero, tiny or NaN: the bound holds for these
    everyone = bool(normal.all())  # the common case: no copy of the scores to screen them
    screened = fast if everyone else fast[normal]
    bounded = unit < 0.5 and q_norm >= 1e-30 and bool(np.isfinite(q32).all())
    if not bounded or len(screened) <= k or not np.isfinite(screened).all():
        return np.arange(n)
    kth = np.partition(screened, -k)[-k]  # the k-th best fast score
    near = fast >= kth - 2 * slack
    return np.flatnonzero(near if everyone else ~normal | near)


def _dots32(matrix: Matrix, q32: Matrix) -> Matrix:
    """Float32 dot products in any order (the bound holds for every order): numpy 2's
    ``vecdot`` is a single-threaded BLAS dot per row, twice einsum's speed in cache."""
    vecdot = getattr(np, "vecdot", None)  # None on numpy 1.x
    dots = np.einsum("ij,j->i", matrix, q32) if vecdot is None else vecdot(matrix, q32)
    return np.asarray(dots, dtype=np.float32)


def best_first(scores: Scores, k: int, key: Callable[[int], Any]) -> list[int]:
    """The positions of the ``k`` best scores, as a full sort by ``(-score, key(i))`` would
    give them: every score tied with the k-th best is a candidate, so ties fall to the key."""
    n = len(scores)
    if k <= 0 or n == 0:
        return []
    if k < n and n > _SORTED:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    values = scores[candidates].tolist()
    order = sorted(range(len(values)), key=lambda j: (-values[j], key(int(candidates[j]))))
    return [int(candidates[j]) for j in order[:k]]


def rank(
    query: Sequence[float],
    vectors: Sequence[Sequence[float] | Matrix],
    k: int,
    key: Callable[[int], Any],
) -> list[tuple[int, float]]:
    """``best_first`` over separate vectors (lists or 1-d arrays): positions and scores."""
    if not vectors:
        return []
    for vector in vectors:  # the first of another length names itself, as the loop did
        if len(vector) != len(query):
            raise mismatch(len(vector), len(query))
    return top_exact(query, np.asarray(vectors, dtype=np.float64), k, key)


def top_exact(
    query: Sequence[float],
    matrix: Matrix,
    k: int,
    key: Callable[[int], Any],
    norms: Scores | None = None,
) -> list[tuple[int, float]]:
    """``best_first`` over every row of ``matrix`` scored in float64: positions and scores."""
    scores = cosines(query, matrix, norms)
    return [(i, float(scores[i])) for i in best_first(scores, k, key)]
