"""A LlamaIndex vector store on the user's memories, through the ``Backend`` protocol.

Nodes are memories of one (tenant, user): the backend filters every read by the scope in
separate columns and binds every filter value as a parameter, so a hostile filter value is
just a value. Another user's node or ref_doc ids are simply missing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from muxi_isolation.errors import InvalidInput
from muxi_isolation.scope import Scope
from muxi_isolation.stores.base import Backend, Scored

from .._owned import OwnsBackend, Storage, unpack
from .._plans import Plan, step, twins
from ._filters import check_delete_filters, to_filter
from ._nodes import NODE_ID_KEY, SESSION_ALIAS, memory_to_node, node_to_memory
from ._scope import resolve_scope

__all__ = ["MuxiVectorStore"]


def _and(*specs: dict[str, Any] | None) -> dict[str, Any] | None:
    parts = [s for s in specs if s]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _ids(key: str, ids: Sequence[str] | None) -> dict[str, Any] | None:
    """``None`` and ``[]`` both mean no restriction (VectorStoreIndex sends ``[]``)."""
    return {key: {"$in": list(ids)}} if ids else None


_MODES = {
    VectorStoreQueryMode.DEFAULT: "vector",
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.TEXT_SEARCH: "text",
    VectorStoreQueryMode.SPARSE: "text",  # as llama-index's PGVectorStore: full-text search
}


def _query_spec(query: VectorStoreQuery) -> dict[str, Any]:
    """``search_memories``' arguments for a query (``HYBRID``: ``alpha`` weights the vector
    ranking, ``sparse_top_k`` is the text ranking's depth, ``hybrid_top_k`` the answer's)."""
    mode = _MODES.get(query.mode)
    if mode is None:
        raise InvalidInput(
            "MuxiVectorStore supports the DEFAULT, HYBRID, TEXT_SEARCH and SPARSE query modes,"
            f" not {query.mode}",
            field="mode",
        )
    if mode != "text" and query.query_embedding is None:
        raise InvalidInput("MuxiVectorStore needs a query embedding", field="query_embedding")
    if mode != "vector" and not query.query_str:
        raise InvalidInput(f"query mode {query.mode} needs a query_str", field="query_str")
    spec = _and(
        to_filter(query.filters, SESSION_ALIAS),
        _ids("ref_doc_id", query.doc_ids),
        _ids(NODE_ID_KEY, query.node_ids),
    )
    vector = None if query.query_embedding is None else list(query.query_embedding)
    k = query.similarity_top_k
    if mode == "vector":
        return {"embedding": vector, "k": k, "filter": spec}
    if mode == "text":
        k = query.sparse_top_k or k
        return {"embedding": vector, "k": k, "filter": spec, "text": query.query_str, "mode": mode}
    return {
        "embedding": vector,
        "k": query.hybrid_top_k or k,
        "filter": spec,
        "text": query.query_str,
        "mode": mode,
        "alpha": 0.5 if query.alpha is None else query.alpha,
        "text_k": query.sparse_top_k or k,
    }


def _result(hits: list[Scored]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[memory_to_node(m) for m, _ in hits],
        similarities=[s for _, s in hits],
        ids=[m.id for m, _ in hits],
    )


def _delete_spec(
    node_ids: Sequence[str] | None, filters: MetadataFilters | None
) -> tuple[list[str] | None, dict[str, Any] | None] | None:
    """What ``delete_nodes`` removes; ``None`` when that is nothing (never everything)."""
    check_delete_filters(filters)
    spec = to_filter(filters, SESSION_ALIAS)
    if node_ids is not None and not node_ids:
        return None
    if node_ids is None and spec is None:
        return None
    return (None if node_ids is None else list(node_ids)), spec


class MuxiVectorStore(OwnsBackend, BasePydanticVectorStore):
    """Nodes stored as one user's memories; ``stores_text`` so no docstore is needed.

    ``scope`` binds the store to one user; without it each call uses the context's scope
    (``use_scope`` / the HTTP middleware) and raises ``MissingScope`` when there is none;
    both set and naming different users is ``ScopeViolation``.
    ``delete_nodes`` with neither ids nor filters deletes nothing, and with filters that
    select everything (none, an empty group) raises ``InvalidFilter``; ``clear`` deletes all
    of this user's memories, whichever framework wrote them.

    ``VectorStoreQueryMode.HYBRID`` fuses vector and full-text ranking of the user's nodes
    (``alpha``, ``sparse_top_k``, ``hybrid_top_k``); ``TEXT_SEARCH`` ranks by text alone.

    ``MuxiVectorStore.from_url("sqlite:///app.db", scope, embedding_dimension=384)`` opens
    (and ``close()`` closes) its own storage; ``MuxiVectorStore(backend, scope)`` shares one.
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    _backend: Backend = PrivateAttr()
    _scope: Scope | None = PrivateAttr(default=None)
    _owned: Backend | None = PrivateAttr(default=None)

    def __init__(self, backend: Storage, scope: Scope | None = None, **kwargs: Any) -> None:
        store = unpack(backend)[0]
        super().__init__(stores_text=True, **kwargs)
        self._backend = store
        self._scope = scope

    def _storage_backend(self) -> Backend:
        return self._backend

    @classmethod
    def class_name(cls) -> str:
        return "MuxiVectorStore"

    @property
    def client(self) -> Backend:
        return self._backend

    @property
    def scope(self) -> Scope:
        """The scope the next call acts for."""
        return resolve_scope(self._scope)

    # -- the operations, each one plan for both halves

    def _add(self, /, nodes: Sequence[BaseNode], **kwargs: Any) -> Plan[list[str]]:
        memories = [node_to_memory(n) for n in nodes]
        b = self._backend
        return (yield from step(b.upsert_memories, b.aupsert_memories, self.scope, memories))

    add, async_add = twins(_add, async_name="async_add")

    def _delete(self, /, ref_doc_id: str, **delete_kwargs: Any) -> Plan[None]:
        b = self._backend
        where = {"ref_doc_id": ref_doc_id}
        yield from step(b.delete_memories, b.adelete_memories, self.scope, filter=where)

    delete, adelete = twins(_delete)

    def _query(self, /, query: VectorStoreQuery, **kwargs: Any) -> Plan[VectorStoreQueryResult]:
        scope, b = self.scope, self._backend
        spec = _query_spec(query)
        return _result((yield from step(b.search_memories, b.asearch_memories, scope, **spec)))

    query, aquery = twins(_query)

    def _get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> Plan[list[BaseNode]]:
        scope = self.scope
        spec = to_filter(filters, SESSION_ALIAS)
        b = self._backend
        if node_ids and spec is None:
            rows = yield from step(b.get_memories, b.aget_memories, scope, node_ids)
        else:
            where = _and(spec, _ids(NODE_ID_KEY, node_ids))
            rows = yield from step(b.list_memories, b.alist_memories, scope, filter=where)
        return [memory_to_node(m, embedding=True) for m in rows]

    get_nodes, aget_nodes = twins(_get_nodes)

    def _delete_nodes(
        self,
        /,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> Plan[None]:
        target = _delete_spec(node_ids, filters)
        if target is not None:
            b = self._backend
            ids, where = target
            scope = self.scope
            yield from step(b.delete_memories, b.adelete_memories, scope, ids=ids, filter=where)

    delete_nodes, adelete_nodes = twins(_delete_nodes)

    def _clear(self) -> Plan[None]:
        yield from step(self._backend.delete_memories, self._backend.adelete_memories, self.scope)

    clear, aclear = twins(_clear)
