"""A deterministic, offline embedding for tests and examples: hashed bag of words.

Not semantic, but texts that share words score higher than texts that do not, which is
enough to show retrieval working without a model or a network.
"""

from __future__ import annotations

import warnings

from langchain_core.embeddings import Embeddings

from muxi_isolation.errors import InvalidInput
from muxi_isolation.hashing import hashing_vector

__all__ = ["HashingEmbeddings"]


class HashingEmbeddings(Embeddings):
    """``muxi_isolation.hashing.hashing_vector`` as LangChain ``Embeddings`` (unit vectors).

    ``dim`` is the number of dimensions, the same name as LlamaIndex's ``HashingEmbedding``;
    ``size`` is its deprecated old name.
    """

    def __init__(self, dim: int = 256, *, size: int | None = None) -> None:
        if size is not None:
            warnings.warn(
                "HashingEmbeddings(size=) is now HashingEmbeddings(dim=)",
                DeprecationWarning,
                stacklevel=2,
            )
            dim = size
        if dim < 2:
            raise InvalidInput("dim must be at least 2", field="dim")
        self.dim = dim

    @property
    def size(self) -> int:
        """Deprecated: ``dim``."""
        return self.dim

    def _embed(self, text: str) -> list[float]:
        return hashing_vector(text, self.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)
