"""langchain-postgres ``PGVector`` tables: collections of documents with their vectors.

``langchain_pg_collection`` names the collections; ``langchain_pg_embedding`` holds each
document (``id``, ``document``, ``cmetadata`` JSONB, ``embedding`` VECTOR). Each becomes a
memory with the same id, text, metadata and stored vector (read as pgvector's text form,
never embedded again). Its key is the collection's name, or the value of the metadata field
``key_field`` when given.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from sqlalchemy import Select, TableClause, select
from sqlalchemy.engine import URL

from ...errors import UnreadableSource
from ...records import Memory
from .._units import Broken, MemoryItem, Source, Unit
from ._langchain_inmemory import document_key
from ._sql import Database, parse_vector, vector_text

__all__ = ["LangChainPGVector"]

COLLECTIONS = "langchain_pg_collection"
EMBEDDINGS = "langchain_pg_embedding"


class LangChainPGVector(Source):
    collections_table: TableClause
    embeddings_table: TableClause

    def __init__(
        self,
        url: str | URL,
        *,
        collections: Sequence[str] | None = None,
        key_field: str | None = None,
        schema: str | None = None,
    ) -> None:
        self.db = Database(url)
        self.collections = None if collections is None else list(collections)
        self.key_field, self.schema = key_field, schema
        self.name = "langchain-pgvector " + (",".join(self.collections or []) or "*")

    def check(self) -> int:
        c, _ = self.db.require(self.schema, [COLLECTIONS], ["uuid", "name"])
        e, _ = self.db.require(
            self.schema, [EMBEDDINGS], ["id", "collection_id", "embedding", "document", "cmetadata"]
        )
        self.collections_table, self.embeddings_table = c, e
        if self.collections is not None:
            found = set(self.db.stream(select(c.c.name).where(c.c.name.in_(self.collections))))
            missing = set(self.collections) - {row.name for row in found}
            if missing:
                raise UnreadableSource(f"no PGVector collection(s) {sorted(missing)}")
        return self.db.count(self._query().subquery())

    def _query(self) -> Select[Any]:
        c, e = self.collections_table, self.embeddings_table
        query = (
            select(e.c.id, c.c.name, e.c.document, e.c.cmetadata, vector_text("embedding"))
            .select_from(e.join(c, e.c.collection_id == c.c.uuid))
            .order_by(c.c.name, e.c.id)
        )
        if self.collections is not None:
            query = query.where(c.c.name.in_(self.collections))
        return query

    def units(self) -> Generator[Unit, None, None]:
        for row in self.db.stream(self._query()):
            metadata = dict(row.cmetadata or {})
            key = document_key(metadata, self.key_field, row.name)
            if key is None:
                yield Broken(f"{row.name} / {row.id}", f"no metadata field {self.key_field!r}")
                continue
            vector = parse_vector(row[4])
            yield MemoryItem(key, Memory(str(row.id), row.document or "", metadata, vector))

    def close(self) -> None:
        self.db.close()
