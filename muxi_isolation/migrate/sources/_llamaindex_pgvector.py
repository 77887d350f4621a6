"""llama-index ``PGVectorStore`` tables (``data_<name>``): nodes with their stored vectors.

Each row (``node_id``, ``text``, ``metadata_``, ``embedding``) is rebuilt into its node the
way the store itself does (``metadata_dict_to_node``), given its stored vector (read as
pgvector's text form, never embedded again), and stored as ``MuxiVectorStore`` stores a
node, so it reads back through the LlamaIndex adapter as the same node. Its key is the
table's name, or the value of the node metadata field ``key_field`` when given.
Scope stamps left by ``ScopedVectorStore`` are checked against the owner and dropped.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

from sqlalchemy import TableClause, select
from sqlalchemy.engine import URL

from ... import policy_foreign as foreign
from .._units import Broken, MemoryItem, Source, Unit
from ._adapters import llamaindex_node_to_memory
from ._langchain_inmemory import document_key
from ._sql import Database, parse_vector, vector_text

__all__ = ["LlamaIndexPGVector"]


class LlamaIndexPGVector(Source):
    table: TableClause

    def __init__(
        self,
        url: str | URL,
        table: str,
        *,
        schema: str = "public",
        key_field: str | None = None,
    ) -> None:
        self.db = Database(url)
        self.table_name, self.schema, self.key_field = table, schema, key_field
        self.name = f"llamaindex-pgvector {schema}.{table}"

    def check(self) -> int:
        llamaindex_node_to_memory()  # fails here, before any write, without the framework
        names = [f"data_{self.table_name}", self.table_name]
        needed = ["id", "node_id", "text", "metadata_", "embedding"]
        self.table, _ = self.db.require(self.schema, names, needed)
        return self.db.count(self.table)

    def units(self) -> Generator[Unit, None, None]:
        t = self.table
        query = select(t.c.node_id, t.c.text, t.c.metadata_, vector_text("embedding"))
        for row in self.db.stream(query.order_by(t.c.id)):
            yield self._unit(row)

    def _unit(self, row: Any) -> Unit:
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        node_to_memory = llamaindex_node_to_memory()
        metadata = dict(row.metadata_ or {})
        ref = f"{self.table_name} / {row.node_id}"
        if row.node_id is None:
            return Broken(ref, "the row has no node_id")
        try:
            node = metadata_dict_to_node(metadata, text=row.text)
        except Exception:  # written without _node_content: a plain text node
            node = TextNode(id_=row.node_id, text=row.text or "", metadata=metadata)
        node.id_ = str(row.node_id)
        node.metadata, stamps = foreign.split_stamp(node.metadata)  # checked by the importer
        key = document_key(node.metadata, self.key_field, self.table_name)
        if key is None:
            return Broken(ref, f"no metadata field {self.key_field!r}")
        node.embedding = parse_vector(row[3])
        memory = node_to_memory(node)
        return MemoryItem(key, replace(memory, metadata={**memory.metadata, **stamps}))

    def close(self) -> None:
        self.db.close()
