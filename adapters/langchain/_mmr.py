"""Maximal marginal relevance in pure Python (no numpy), deterministic on ties."""

from __future__ import annotations

import math
from collections.abc import Sequence

from muxi_isolation.errors import InvalidInput
from muxi_isolation.stores.similarity import cosine

__all__ = ["mmr"]


def mmr(
    query: Sequence[float], candidates: Sequence[Sequence[float]], k: int, lambda_mult: float
) -> list[int]:
    """Indexes of up to ``k`` candidates, each maximising
    ``lambda_mult * sim(query) - (1 - lambda_mult) * max sim(already chosen)``.

    The first pick is the candidate closest to the query; ties go to the earlier one.
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise InvalidInput("lambda_mult must be between 0 and 1", field="lambda_mult")
    to_query = [cosine(query, c) for c in candidates]
    chosen: list[int] = []
    redundancy = [-math.inf] * len(candidates)
    while len(chosen) < min(k, len(candidates)):
        best, best_score = -1, -math.inf
        for i, sim in enumerate(to_query):
            if i in chosen:
                continue
            penalty = redundancy[i] if chosen else 0.0
            score = lambda_mult * sim - (1.0 - lambda_mult) * penalty
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
        for i, candidate in enumerate(candidates):
            redundancy[i] = max(redundancy[i], cosine(candidates[best], candidate))
    return chosen
