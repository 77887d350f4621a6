"""A deterministic, offline embedding for tests and examples.

``MockEmbedding`` returns one constant vector, so every document ties and nothing ranks.
This hashes each lower-cased word to one of ``dim`` signed buckets (the "hashing trick")
and normalizes: texts that share words point the same way, with no model and no network.
It is not a semantic model; it only makes retrieval demonstrable.
"""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field

from muxi_isolation.hashing import hashing_vector

__all__ = ["HashingEmbedding"]


class HashingEmbedding(BaseEmbedding):
    """Word hashing into ``dim`` dimensions; the same text always gets the same vector."""

    dim: int = Field(default=256, gt=1, description="Number of dimensions.")
    model_name: str = "muxi-hashing"

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return hashing_vector(query, self.dim)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)  # pure computation: the sync half as is

    # No _aget_text_embedding: BaseEmbedding's own falls back to this one.
    def _get_text_embedding(self, text: str) -> list[float]:
        return hashing_vector(text, self.dim)
