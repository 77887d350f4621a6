"""A deterministic, offline text embedding for tests and examples: the hashing trick.

Each lower-cased word adds +-1 to one of ``dim`` buckets and the vector is normalized, so
texts that share words point the same way, with no model and no network. Not semantic; it
only makes retrieval demonstrable. Both framework adapters wrap this one function, so a
memory embedded through one framework is found through the other.
"""

from __future__ import annotations

import hashlib
import math
import re

from .errors import InvalidInput

__all__ = ["hashing_vector"]

_WORD = re.compile(r"\w+", re.UNICODE)


def hashing_vector(text: str, dim: int = 256) -> list[float]:
    if dim < 2:
        raise InvalidInput("dim must be at least 2", field="dim")
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
