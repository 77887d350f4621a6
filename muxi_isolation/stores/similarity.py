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

__all__ = ["best_first", "cosine", "cosine_normed", "cosines", "mismatch", "norm", "rank"]

Matrix = npt.NDArray[np.floating[Any]]
Scores = npt.NDArray[np.float64]

_BLOCK = 4096  # rows scored at a time: a float64 copy of a block stays in cache


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


def cosines(query: Sequence[float], matrix: Matrix) -> Scores:
    """The cosine similarity of ``query`` with each row of ``matrix`` (rows x dimensions)."""
    q = np.asarray(query, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(q):
        raise mismatch(matrix.shape[-1], len(q))
    out = np.empty(matrix.shape[0], dtype=np.float64)
    with np.errstate(all="ignore"):  # 0/0 for a zero vector; overflow of absurd magnitudes
        q_norm = np.sqrt(np.einsum("j,j->", q, q))
        for start in range(0, matrix.shape[0], _BLOCK):
            block = matrix[start : start + _BLOCK].astype(np.float64, copy=False)
            dots = np.einsum("ij,j->i", block, q)
            denominators = np.sqrt(np.einsum("ij,ij->i", block, block)) * q_norm
            out[start : start + _BLOCK] = np.where(denominators != 0, dots / denominators, 0.0)
    out[np.isnan(out)] = 0.0  # inf/inf: scored as pgvector's NaN distance is (0)
    return out


def best_first(scores: Scores, k: int, key: Callable[[int], Any]) -> list[int]:
    """The positions of the ``k`` best scores, as a full sort by ``(-score, key(i))`` would
    give them: every score tied with the k-th best is a candidate, so ties fall to the key."""
    n = len(scores)
    if k <= 0 or n == 0:
        return []
    if k < n:
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
    scores = cosines(query, np.asarray(vectors, dtype=np.float64))
    return [(i, float(scores[i])) for i in best_first(scores, k, key)]
