"""A deterministic, offline embedding for tests and examples: hashed bag of words.

Not semantic, but texts that share words score higher than texts that do not, which is
enough to show retrieval working without a model or a network.
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from muxi_isolation.errors import InvalidInput
from muxi_isolation.hashing import hashing_vector

__all__ = ["HashingEmbeddings"]


class HashingEmbeddings(Embeddings):
    """``muxi_isolation.hashing.hashing_vector`` as LangChain ``Embeddings`` (unit vectors)."""

    def __init__(self, size: int = 256) -> None:
        if size < 2:
            raise InvalidInput("size must be at least 2", field="size")
        self.size = size

    def _embed(self, text: str) -> list[float]:
        return hashing_vector(text, self.size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)
