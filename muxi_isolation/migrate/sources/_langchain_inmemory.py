"""LangChain ``InMemoryVectorStore.dump(path)`` files: memories with their stored vectors.

The dump is ``{id: {"id", "vector", "text", "metadata"}}``. Each document becomes a memory
with the same id, text, metadata and vector (never embedded again), as
``MuxiVectorStore`` stores a ``Document``. Its key is the value of the metadata field
``key_field`` when given (one dump for many users), else the file's stem (one dump per
user: ``user_1.json``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

from ...errors import UnreadableSource
from ...records import Memory
from .._units import Broken, MemoryItem, Source, Unit
from ._files import load_json

__all__ = ["LangChainInMemoryDump", "document_key"]


def document_key(metadata: Mapping[str, Any], key_field: str | None, default: str) -> str | None:
    """The unit key of a vector record: a metadata field's value, or ``default``."""
    if key_field is None:
        return default
    value = metadata.get(key_field)
    return None if value is None else str(value)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    )


class LangChainInMemoryDump(Source):
    def __init__(self, path: str | Path, *, key_field: str | None = None) -> None:
        self.path = Path(path)
        self.key_field = key_field
        self.name = f"langchain-inmemory {self.path}"
        self.docs: dict[str, Any] = {}

    def check(self) -> int:
        data = load_json(self.path)
        if not isinstance(data, dict):
            raise UnreadableSource(f"{self.path}: not an InMemoryVectorStore dump (not an object)")
        for doc_id, doc in data.items():
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise UnreadableSource(f"{self.path}: document {doc_id!r} has no text")
            if not _numbers(doc.get("vector")):
                raise UnreadableSource(f"{self.path}: document {doc_id!r} has no vector")
            if not isinstance(doc.get("metadata", {}), dict):
                why = f"document {doc_id!r}'s metadata is not an object"
                raise UnreadableSource(f"{self.path}: {why}")
        self.docs = data
        return len(data)

    def units(self) -> Generator[Unit, None, None]:
        for doc_id, doc in self.docs.items():
            memory_id = str(doc.get("id") or doc_id)
            metadata = dict(doc.get("metadata") or {})
            key = document_key(metadata, self.key_field, self.path.stem)
            if key is None:
                why = f"no metadata field {self.key_field!r}"
                yield Broken(f"{self.path.stem} / {memory_id}", why)
                continue
            vector = [float(x) for x in doc["vector"]]
            yield MemoryItem(key, Memory(memory_id, doc["text"], metadata, vector))
