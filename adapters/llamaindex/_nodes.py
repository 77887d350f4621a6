"""Nodes <-> memories, and stamping/stripping nodes for stores we do not own.

A node is stored as a memory the way llama-index's own stores keep it: the text as
content; the caller's metadata as filterable keys, beside ``_node_content`` (the whole node
as JSON, relationships included), ``_node_type``, ``ref_doc_id``/``doc_id``/``document_id``
and ``_node_id``. So a node comes back exactly as it went in, and a memory written by
another framework (no ``_node_content``) still reads back as a plain ``TextNode``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from llama_index.core.schema import (
    BaseNode,
    Document,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from muxi_isolation import policy
from muxi_isolation import policy_foreign as foreign
from muxi_isolation.policy_foreign import own_id
from muxi_isolation.records import Memory
from muxi_isolation.scope import Scope

__all__ = [
    "NODE_ID_KEY",
    "SESSION_ALIAS",
    "memory_to_node",
    "node_to_memory",
    "own_id",
    "owned",
    "stamp_node",
    "strip_node",
    "verified_nodes",
]

NODE_ID_KEY = "_node_id"
# LlamaIndex's Memory stamps ``session_id`` on what it flushes to memory blocks and
# VectorMemoryBlock filters on it; the core refuses filters on the bare scope field names,
# so the filterable copy of that key is stored (and filtered) under another name.
SESSION_ALIAS = {"session_id": "_session_id"}
_INTERNAL_KEYS = frozenset(
    {"_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id", NODE_ID_KEY}
) | frozenset(SESSION_ALIAS.values())
N = TypeVar("N", bound=BaseNode)


def node_to_memory(node: BaseNode) -> Memory:
    """The memory record of a node; reserved scope keys in its metadata raise ``ReservedKey``."""
    policy.check_metadata(node.metadata)
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    metadata[NODE_ID_KEY] = node.node_id
    for key, alias in SESSION_ALIAS.items():
        if key in metadata:
            metadata[alias] = metadata.pop(key)
    embedding = None if node.embedding is None else [float(x) for x in node.embedding]
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    return Memory(node.node_id, text, metadata, embedding)


def memory_to_node(memory: Memory, *, embedding: bool = False) -> BaseNode:
    """The node a memory holds (a plain ``TextNode`` for memories written elsewhere)."""
    node: BaseNode
    try:
        if memory.metadata.get("_node_type") == Document.class_name():  # the helper drops it
            node = Document.from_json(memory.metadata["_node_content"])
            node.set_content(memory.content)
        else:
            node = metadata_dict_to_node(memory.metadata, text=memory.content)
    except (ValueError, TypeError, KeyError):
        public = {k: v for k, v in memory.metadata.items() if k not in _INTERNAL_KEYS}
        node = TextNode(id_=memory.id, text=memory.content, metadata=public)
    node.id_ = memory.id
    if embedding:
        node.embedding = None if memory.embedding is None else list(memory.embedding)
    return node


def stamp_node(scope: Scope, node: N, prefix: str | None = None) -> N:
    """A copy of ``node`` stamped for ``scope``, under per-user ids (the caller's node is left
    alone): its id and every id it relates to (its document, parent, neighbours) get the
    user's prefix (``policy.foreign_id_prefix``, passed in when stamping a batch), so
    nothing that keys nodes or documents by id (a node parser, a docstore, a store we do
    not own) can merge two users' objects."""
    own = policy.foreign_id_prefix(scope) if prefix is None else prefix
    update: dict[str, Any] = {
        "id_": own + node.node_id,
        "metadata": policy.stamp_metadata(scope, node.metadata),
    }
    if node.relationships:
        update["relationships"] = _relink(node, lambda i: own + i)
    return node.model_copy(update=update)


def strip_node(scope: Scope, node: N) -> N:
    """A copy of ``node`` without the reserved stamp keys, under the caller's own ids (ids
    outside ``scope``'s namespace, such as a node parser's, are kept as they are)."""
    update: dict[str, Any] = {}
    if policy.RESERVED_KEYS.intersection(node.metadata):
        update["metadata"] = foreign.unstamp(node.metadata)
    own = policy.caller_id(scope, node.node_id)
    if own is not None:
        update["id_"] = own
    related = _relink(node, lambda i: own_id(scope, i))
    if related != node.relationships:
        update["relationships"] = related
    return node.model_copy(update=update) if update else node


def _relink(node: BaseNode, rename: Callable[[str], str]) -> dict[NodeRelationship, Any]:
    def one(info: RelatedNodeInfo) -> RelatedNodeInfo:
        return info.model_copy(update={"node_id": rename(info.node_id)})

    return {
        kind: [one(i) for i in info] if isinstance(info, list) else one(info)
        for kind, info in node.relationships.items()
    }


def owned(scope: Scope, metadata: Mapping[str, Any] | None, level: int = logging.ERROR) -> bool:
    """Whether a foreign store's record carries ``scope``'s stamp; reports it when it does not."""
    return foreign.owned(scope, metadata, what="node", source="a wrapped store", level=level)


def verified_nodes(scope: Scope, nodes: Sequence[N]) -> list[N]:
    """Only the nodes stamped for ``scope``, stripped of their stamps, under the caller's ids."""
    return [strip_node(scope, n) for n in nodes if owned(scope, n.metadata)]
