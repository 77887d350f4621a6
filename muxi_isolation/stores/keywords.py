"""Keyword search's shared pieces: a query's words, the memory backend's ranking, and the
fusion of a vector ranking with a keyword ranking (hybrid search)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..records import Memory

__all__ = ["MAX_WORDS", "RRF_K", "fuse", "overlap", "words"]

MAX_WORDS = 64  # a query's words kept: enough for any question, bounded for the planner
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al.; the peers use 60 too)
_WORD = re.compile(r"[^\W_]+")

Scored = tuple[Memory, float]


def words(text: str) -> list[str]:
    """The text's distinct words (letters and digits), lower-cased, in order, at most
    ``MAX_WORDS``: no query syntax of any database survives this."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_WORDS]


def overlap(query: list[str], memories: Iterable[Memory], k: int) -> list[Scored]:
    """The memory backend's keyword ranking: how many of the query's words a memory holds
    (ties by id); memories holding none do not match."""
    wanted = set(query)
    scored = []
    for memory in memories:
        hits = len(wanted.intersection(words(memory.content.lower())))
        if hits:
            scored.append((memory, float(hits)))
    scored.sort(key=lambda pair: (-pair[1], pair[0].id))
    return scored[:k]


def fuse(vector: list[Scored], text: list[Scored], k: int, alpha: float) -> list[Scored]:
    """Reciprocal rank fusion: ``alpha / (RRF_K + vector rank) + (1 - alpha) / (RRF_K + text
    rank)``, best first (ties by id); ``alpha`` 1 is the vector ranking alone, 0 the text's.

    Each ranking's top ``k`` (or more) fused keep ``min(k, rows in either)``: a side with
    ``k`` fills the result alone, and two short sides are whole."""
    score: dict[str, float] = {}
    found: dict[str, Memory] = {}
    for weight, ranking in ((alpha, vector), (1.0 - alpha, text)):
        for rank, (memory, _) in enumerate(ranking, start=1):
            found.setdefault(memory.id, memory)
            score[memory.id] = score.get(memory.id, 0.0) + weight / (RRF_K + rank)
    best = sorted(score.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [(found[memory_id], value) for memory_id, value in best]
