"""A deterministic, offline embedding for tests and examples.

``MockEmbedding`` returns one constant vector, so every document ties and nothing ranks.
This hashes each lower-cased word to one of ``dim`` signed buckets (the "hashing trick")
and normalizes: texts that share words point the same way, with no model and no network.
It is not a semantic model; it only makes retrieval demonstrable.
"""

from __future__ import annotations

import hashlib
import math
import re

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field

__all__ = ["HashingEmbedding"]

_WORD = re.compile(r"\w+", re.UNICODE)


def hashing_vector(text: str, dim: int) -> list[float]:
    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if not norm:  # no words: a fixed unit vector (a zero vector has no cosine)
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


class HashingEmbedding(BaseEmbedding):
    """Word hashing into ``dim`` dimensions; the same text always gets the same vector."""

    dim: int = Field(default=256, gt=0, description="Number of dimensions.")
    model_name: str = "muxi-hashing"

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return hashing_vector(query, self.dim)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return hashing_vector(query, self.dim)

    def _get_text_embedding(self, text: str) -> list[float]:
        return hashing_vector(text, self.dim)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return hashing_vector(text, self.dim)
