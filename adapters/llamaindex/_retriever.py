"""``ScopedRetriever``: any LlamaIndex retriever, with every node it returns verified.

For retrievers we cannot scope from the inside (a keyword or summary retriever, a hosted
one, an index over a shared store): the nodes must carry the scope stamp (write them with
``stamp_nodes`` or through a ``ScopedVectorStore`` on the raw store); anything not stamped
for this user is dropped and logged, and the stamp is stripped from what is returned, as is
the user's id prefix that ``stamp_nodes`` put on node and document ids.

Over a retriever shared by many users, foreign nodes are expected, so each dropped node is
logged at WARNING (``muxi_isolation.adapters.llamaindex``), not ERROR as in the stores.

Verification cannot restore recall: if the wrapped retriever ranks every user's nodes
together, a user can get fewer than top-k results. Scope the store underneath
(``MuxiVectorStore``, ``ScopedVectorStore``) for that, and keep this as the last check.
Nodes from those stores come back already stripped, so do not stack this on top of them.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from muxi_isolation.errors import UnsupportedStore
from muxi_isolation.scope import Scope

from .._plans import Plan, step, twins
from ._nodes import owned, strip_node
from ._scope import resolve_scope

__all__ = ["ScopedRetriever"]


class ScopedRetriever(BaseRetriever):
    """Wrap ``retriever`` for one scope (or the context's scope at each call; both must
    name the same user)."""

    def __init__(self, retriever: BaseRetriever, scope: Scope | None = None, **kwargs: Any) -> None:
        if not isinstance(retriever, BaseRetriever):
            kind = type(retriever).__name__
            raise UnsupportedStore(f"a LlamaIndex retriever is required, got {kind}")
        kwargs.setdefault("callback_manager", retriever.callback_manager)
        super().__init__(**kwargs)
        self._retriever = retriever
        self._scope = scope

    @property
    def retriever(self) -> BaseRetriever:
        return self._retriever

    def _keep(self, scope: Scope, found: list[NodeWithScore]) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=strip_node(scope, n.node), score=n.score)
            for n in found
            if owned(scope, n.node.metadata, logging.WARNING)
        ]

    def _retrieving(self, query_bundle: QueryBundle) -> Plan[list[NodeWithScore]]:
        scope = resolve_scope(self._scope)
        r = self._retriever
        return self._keep(scope, (yield from step(r.retrieve, r.aretrieve, query_bundle)))

    _retrieve, _aretrieve = twins(_retrieving, "_retrieve")
