"""Cosine similarity in pure Python, for the exact searches that do not run in SQL.

One definition for every backend and adapter, so rankings agree: a zero vector scores 0,
and vectors of different lengths are an error, never a silent truncation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul

from ..errors import InvalidInput

__all__ = ["cosine", "cosine_normed", "norm"]


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(map(mul, vector, vector)))


def cosine_normed(query: Sequence[float], query_norm: float, vector: Sequence[float]) -> float:
    """Cosine similarity with the query's norm computed once for a whole scan."""
    if len(vector) != len(query):
        raise InvalidInput(
            f"embedding has {len(vector)} dimensions, the query {len(query)}", field="embedding"
        )
    denominator = query_norm * norm(vector)
    return sum(map(mul, query, vector)) / denominator if denominator else 0.0


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return cosine_normed(a, norm(a), b)
