"""A deterministic, offline embedding for tests and examples: hashed bag of words.

Not semantic, but texts that share words score higher than texts that do not, which is
enough to show retrieval working without a model or a network.
"""

from __future__ import annotations

import hashlib
import math
import re

from langchain_core.embeddings import Embeddings

__all__ = ["HashingEmbeddings"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbeddings(Embeddings):
    """Each lower-cased word adds +-1 to one of ``size`` buckets; vectors are unit length."""

    def __init__(self, size: int = 256) -> None:
        if size < 2:
            raise ValueError("size must be at least 2")
        self.size = size

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.size
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "big")
            vector[value % self.size] += 1.0 if value >> 63 else -1.0
        norm = math.sqrt(sum(x * x for x in vector))
        if not norm:  # no words: a fixed unit vector, never a zero vector
            return [1.0] + [0.0] * (self.size - 1)
        return [x / norm for x in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)
