"""``ScopedVectorStore``: one user's view of a LlamaIndex vector store we do not own.

Writes are stamped with reserved metadata keys (a caller's reserved key raises
``ReservedKey``) and stored under per-user ids (``policy.foreign_id``: node, document and
related ids get the user's prefix), so two users' ids never meet in the shared store and
there is no check-then-write to race; every id comes back without the prefix. Reads run the
scope filter *around* the caller's filter, ``MetadataFilters([scope, caller],
condition=AND)``, never inside it (appending to an OR tree widens it). Every returned node
is verified against its stamp (anything foreign is dropped and logged) and comes back
without the stamp. Deletes act only on nodes the scope's stamp owns; another user's node
or ref_doc ids are treated as missing, and a delete filter that selects everything is
refused (``InvalidFilter``).

Per store:

- ``SimpleVectorStore`` cannot evaluate nested filters, so the scope is applied as an
  allow-list of the node ids it owns (read from the store's metadata), intersected with the
  query's ``node_ids``; caller filters pass through unchanged, with SimpleVectorStore's own
  limits (flat filters only). It keeps no text, so LlamaIndex reads nodes from the index's
  docstore: give each user their own docstore.
- ``PGVectorStore`` pastes filter keys and values into SQL text. The scope filter uses
  ``IN`` (text comparison: ``EQ`` casts numeric-looking ids to float, so user ``1e3`` would
  match user ``1000``), scope ids and caller keys/values holding a quote, backslash, colon
  or control character are refused (``InvalidIdentifier`` / ``InvalidFilter``), and every
  returned node is still verified, so even a filter the guard missed leaks nothing.
  ``paste_guard=False`` lifts the check on caller filters only: the scope ids and document
  ids the wrapper pastes itself are always checked, since deletes rely on them.
  ``FilterCondition.NOT`` is not supported by PGVectorStore itself.
- Other stores get the wrapped filter, the same guard (turn it off with
  ``paste_guard=False`` for stores that bind their parameters) and the same verification.
  A store that returns only ids must implement ``get_nodes`` so the ids can be verified.
  Ids are stored as ``muxi:<hash>:<id>``: a store that takes only UUIDs or integers as ids
  cannot be wrapped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, overload

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.simple import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

from muxi_isolation import policy
from muxi_isolation import policy_foreign as foreign
from muxi_isolation.errors import InvalidIdentifier, ScopeViolation, UnsupportedStore
from muxi_isolation.policy_foreign import own_id
from muxi_isolation.scope import Scope

from .._plans import Plan, step, twins
from ._filters import check_delete_filters, check_pasteable, pasteable
from ._nodes import SESSION_ALIAS, owned, stamp_node, strip_node, verified_nodes
from ._scope import resolve_scope
from ._vector_store import MuxiVectorStore

__all__ = ["ScopedVectorStore", "stamp_nodes"]

SIMPLE, POSTGRES, GENERIC = "simple", "postgres", "generic"
_ALIASED = frozenset(SESSION_ALIAS)


def stamp_nodes(scope: Scope, nodes: Sequence[BaseNode]) -> list[BaseNode]:
    """Copies of ``nodes`` stamped for ``scope``, for stores, docstores or pipelines you fill
    yourself: node, document and related ids get the user's prefix, and every reader here
    (``ScopedRetriever``, ``ScopedVectorStore``) gives the user's own ids back."""
    prefix = policy.foreign_id_prefix(scope)
    return [stamp_node(scope, n, prefix) for n in nodes]


def _kind(store: BasePydanticVectorStore) -> str:
    if isinstance(store, SimpleVectorStore):
        return SIMPLE
    if any(c.__name__ == "PGVectorStore" for c in type(store).__mro__):
        return POSTGRES
    return GENERIC


def _keys(filters: MetadataFilters) -> Iterator[str]:
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            yield from _keys(f)
        else:
            yield f.key


def _and(*groups: MetadataFilters | None) -> MetadataFilters:
    kept: list[MetadataFilter | MetadataFilters] = [g for g in groups if g is not None]
    return MetadataFilters(filters=kept, condition=FilterCondition.AND)


def _nothing(node_ids: Sequence[str] | None, filters: MetadataFilters | None) -> bool:
    """Whether a delete names nothing: it then deletes nothing, never everything."""
    no_filters = filters is None or not filters.filters
    return (node_ids is not None and not node_ids) or (node_ids is None and no_filters)


def _empty() -> VectorStoreQueryResult:
    return VectorStoreQueryResult(nodes=None, similarities=[], ids=[])


class ScopedVectorStore(BasePydanticVectorStore):
    """Wrap ``store`` so every call acts for one (tenant, user) only.

    ``scope`` binds the wrapper to one user; without it each call uses the context's scope
    and raises ``MissingScope`` when none is set (both, naming different users:
    ``ScopeViolation``). ``delete_nodes`` with neither ids nor
    filters deletes nothing, and with filters that select everything (none, an empty group)
    raises ``InvalidFilter``; ``clear`` deletes only this user's nodes.
    """

    stores_text: bool = False
    _inner: BasePydanticVectorStore = PrivateAttr()
    _scope: Scope | None = PrivateAttr(default=None)
    _kind: str = PrivateAttr()
    _guard: bool = PrivateAttr()

    def __init__(
        self,
        store: BasePydanticVectorStore,
        scope: Scope | None = None,
        *,
        paste_guard: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(store, BasePydanticVectorStore):
            kind = type(store).__name__
            raise UnsupportedStore(f"a LlamaIndex vector store is required, got {kind}")
        if isinstance(store, (ScopedVectorStore, MuxiVectorStore)):
            raise UnsupportedStore(f"{type(store).__name__} is scoped already: use it directly")
        super().__init__(
            stores_text=store.stores_text, is_embedding_query=store.is_embedding_query, **kwargs
        )
        self._inner = store
        self._scope = scope
        self._kind = _kind(store)
        self._guard = self._kind != SIMPLE if paste_guard is None else paste_guard

    @classmethod
    def class_name(cls) -> str:
        return "ScopedVectorStore"

    @property
    def client(self) -> Any:
        return self._inner.client

    @property
    def store(self) -> BasePydanticVectorStore:
        """The wrapped store (unscoped: do not hand it to a user)."""
        return self._inner

    def persist(self, persist_path: str, fs: Any = None) -> None:
        self._inner.persist(persist_path, fs=fs)

    # -- pure decisions shared by the sync and async twins

    @property
    def _store_name(self) -> str:
        return type(self._inner).__name__

    def _current(self) -> Scope:
        return resolve_scope(self._scope)

    def _match(self, key: str, value: str) -> MetadataFilter:
        if self._kind == POSTGRES:
            return MetadataFilter(key=key, value=[value], operator=FilterOperator.IN)
        return MetadataFilter(key=key, value=value, operator=FilterOperator.EQ)

    @property
    def _pastes_own_values(self) -> bool:
        """Our own scope and document ids are checked for PGVectorStore whatever the guard."""
        return self._guard or self._kind == POSTGRES

    def _check_scope(self, scope: Scope) -> None:
        """Refuse a scope whose ids this store would paste into SQL unsafely."""
        if self._pastes_own_values:
            for field, value in (("tenant_id", scope.tenant_id), ("user_id", scope.user_id)):
                if not pasteable(value):
                    raise InvalidIdentifier(
                        field, f"holds a character {self._store_name} would paste into SQL unsafely"
                    )

    def _scope_filters(self, scope: Scope) -> MetadataFilters:
        self._check_scope(scope)
        stamp = policy.scope_metadata(scope.user())
        return _and(*(MetadataFilters(filters=[self._match(k, v)]) for k, v in stamp.items()))

    def _caller(self, filters: MetadataFilters | None) -> MetadataFilters | None:
        if filters is None or not filters.filters:
            return None
        # Memory's own ``session_id`` key (see _nodes.SESSION_ALIAS) stays filterable here.
        foreign.refuse_filter_keys(_keys(filters), allowed=_ALIASED)
        if self._guard:
            check_pasteable(filters, self._store_name)
        return filters

    def _wrap(self, scope: Scope, filters: MetadataFilters | None) -> MetadataFilters:
        scoped = self._scope_filters(scope)
        caller = self._caller(filters)
        return scoped if caller is None else _and(scoped, caller)

    def _stamped(self, scope: Scope, nodes: Sequence[BaseNode]) -> list[BaseNode]:
        self._check_scope(scope)  # refuse now a scope this store could never read back
        stamped = stamp_nodes(scope, nodes)
        if self._kind == SIMPLE:
            for node in stamped:
                node.get_embedding()  # raises now, not halfway through the batch
            data = self._simple.data.metadata_dict
            foreign.refuse_taken(scope, [data[n.node_id] for n in stamped if n.node_id in data])
        return stamped

    def _checks_ids(self, nodes: Sequence[BaseNode]) -> bool:
        """A store we do not know may upsert by id, letting one user overwrite another's node."""
        return self._kind == GENERIC and bool(nodes)

    @property
    def _simple(self) -> SimpleVectorStore:
        assert isinstance(self._inner, SimpleVectorStore)
        return self._inner

    def _owned_ids(self, scope: Scope) -> list[str]:
        data = self._simple.data.metadata_dict
        return [i for i, md in data.items() if policy.verify_metadata(scope, md)]

    def _simple_query(self, scope: Scope, query: VectorStoreQuery) -> VectorStoreQuery | None:
        allowed = self._owned_ids(scope)
        if query.node_ids is not None:
            wanted = set(_stored_ids(scope, query.node_ids))
            allowed = [i for i in allowed if i in wanted]
        if not allowed:
            return None
        return dataclasses.replace(query, node_ids=allowed, filters=self._caller(query.filters))

    def _scoped_query(self, scope: Scope, query: VectorStoreQuery) -> VectorStoreQuery | None:
        if self._kind == SIMPLE:
            return self._simple_query(scope, query)
        return dataclasses.replace(
            query,
            node_ids=_stored_ids(scope, query.node_ids),
            doc_ids=_stored_ids(scope, query.doc_ids),
            filters=self._wrap(scope, query.filters),
        )

    def _verified(
        self, scope: Scope, result: VectorStoreQueryResult
    ) -> Plan[VectorStoreQueryResult]:
        if result.nodes is not None:
            keep = [i for i, n in enumerate(result.nodes) if owned(scope, n.metadata)]
            nodes: list[BaseNode] | None = [strip_node(scope, result.nodes[i]) for i in keep]
        elif result.ids is not None and self._kind == SIMPLE:
            data = self._simple.data.metadata_dict
            keep = [i for i, nid in enumerate(result.ids) if owned(scope, data.get(nid))]
            nodes = None
        else:
            return (yield from self._verified_by_lookup(scope, result))
        return VectorStoreQueryResult(
            nodes=nodes,
            similarities=_pick(result.similarities, keep),
            ids=_own_ids(scope, _pick(result.ids, keep)),
        )

    def _verified_by_lookup(
        self, scope: Scope, result: VectorStoreQueryResult
    ) -> Plan[VectorStoreQueryResult]:
        ids = list(result.ids or [])
        if not ids:
            return _empty()
        try:
            found = yield from self._fetch(node_ids=ids, filters=self._scope_filters(scope))
        except NotImplementedError as exc:
            raise self._unverifiable() from exc
        return _keep_found(scope, result, found)

    def _unverifiable(self) -> ScopeViolation:
        return ScopeViolation(
            f"{self._store_name} returns bare ids and cannot look nodes up: "
            "its results cannot be verified"
        )

    def _ref_doc_filters(self, scope: Scope, ref_doc_id: str) -> MetadataFilters | None:
        """The filter for this user's nodes of a document, when it can be pasted safely (the
        prefix's colons each follow a word character, so SQLAlchemy sees no bind parameter)."""
        if self._pastes_own_values and not pasteable(ref_doc_id):
            return None
        refs = _stored_ids(scope, [ref_doc_id])
        match = MetadataFilter(key="ref_doc_id", value=refs, operator=FilterOperator.IN)
        return _and(self._scope_filters(scope), MetadataFilters(filters=[match]))

    def _simple_targets(
        self, scope: Scope, node_ids: Sequence[str] | None, ref_doc_id: str | None = None
    ) -> list[str]:
        ids = self._owned_ids(scope)
        if node_ids is not None:
            wanted = set(_stored_ids(scope, node_ids))
            ids = [i for i in ids if i in wanted]
        if ref_doc_id is not None:
            refs = self._simple.data.text_id_to_ref_doc_id
            ids = [i for i in ids if own_id(scope, refs.get(i, "")) == ref_doc_id]
        return ids

    # -- the public calls: one plan each, both halves made from it (see .._plans)

    def _add(self, /, nodes: Sequence[BaseNode], **kwargs: Any) -> Plan[list[str]]:
        scope = self._current()
        stamped = self._stamped(scope, nodes)
        if self._checks_ids(stamped):
            try:
                existing = yield from self._fetch(node_ids=[n.node_id for n in stamped])
            except NotImplementedError:
                existing = []
            foreign.refuse_taken(scope, [n.metadata for n in existing])
        inner = self._inner
        return _own_ids(scope, (yield from step(inner.add, inner.async_add, stamped, **kwargs)))

    def _query(self, /, query: VectorStoreQuery, **kwargs: Any) -> Plan[VectorStoreQueryResult]:
        scope = self._current()
        scoped = self._scoped_query(scope, query)
        if scoped is None:
            return _empty()
        result = yield from step(self._inner.query, self._inner.aquery, scoped, **kwargs)
        return (yield from self._verified(scope, result))

    def _get_nodes(
        self, /, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> Plan[list[BaseNode]]:
        scope = self._current()
        stored = _stored_ids(scope, node_ids)
        if self._kind != SIMPLE:
            filters = self._wrap(scope, filters)
        # SimpleVectorStore keeps no nodes and raises; verified all the same
        return verified_nodes(scope, (yield from self._fetch(stored, filters)))

    def _delete(self, /, ref_doc_id: str, **delete_kwargs: Any) -> Plan[None]:
        scope = self._current()
        if self._kind == SIMPLE:
            yield from self._delete_ids(scope, self._simple_targets(scope, None, ref_doc_id))
            return
        spec = self._ref_doc_filters(scope, ref_doc_id)
        found = yield from self._fetch(filters=spec or self._scope_filters(scope))
        yield from self._delete_ids(scope, _of_document(scope, found, ref_doc_id))

    def _delete_nodes(
        self,
        /,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> Plan[None]:
        scope = self._current()
        check_delete_filters(filters)
        if _nothing(node_ids, filters):
            return
        if self._kind == SIMPLE:
            targets = self._simple_targets(scope, node_ids)
            if targets:
                yield from self._remove(targets, self._caller(filters), **delete_kwargs)
            return
        found = yield from self._fetch(_stored_ids(scope, node_ids), self._wrap(scope, filters))
        yield from self._delete_ids(scope, _mine(scope, found))

    def _clear(self, /) -> Plan[None]:
        scope = self._current()
        if self._kind == SIMPLE:
            yield from self._delete_ids(scope, self._owned_ids(scope))
        else:
            yield from self._remove(filters=self._scope_filters(scope))

    def _delete_ids(self, scope: Scope, ids: list[str]) -> Plan[None]:
        if not ids:
            return
        if self._kind == SIMPLE:
            yield from self._remove(node_ids=ids)
        else:
            yield from self._remove(node_ids=ids, filters=self._scope_filters(scope))

    def _fetch(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> Plan[list[BaseNode]]:
        inner = self._inner
        return (yield from step(inner.get_nodes, inner.aget_nodes, node_ids, filters))

    def _remove(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> Plan[None]:
        inner = self._inner
        yield from step(inner.delete_nodes, inner.adelete_nodes, node_ids, filters, **delete_kwargs)

    add, async_add = twins(_add, async_name="async_add")
    query, aquery = twins(_query)
    get_nodes, aget_nodes = twins(_get_nodes)
    delete, adelete = twins(_delete)
    delete_nodes, adelete_nodes = twins(_delete_nodes)
    clear, aclear = twins(_clear)


@overload
def _stored_ids(scope: Scope, ids: Sequence[str]) -> list[str]: ...
@overload
def _stored_ids(scope: Scope, ids: None) -> None: ...
@overload
def _stored_ids(scope: Scope, ids: Sequence[str] | None) -> list[str] | None: ...
def _stored_ids(scope: Scope, ids: Sequence[str] | None) -> list[str] | None:
    """The stored ids a caller's ids may be under: in the user's namespace (written through
    this wrapper), or as given (written around it, e.g. ``stamp_nodes`` through a parser).
    Either way only nodes stamped for the user are ever returned or deleted."""
    if ids is None:
        return None
    return [policy.foreign_id(scope, i) for i in ids] + [i for i in ids if i]


@overload
def _own_ids(scope: Scope, ids: Sequence[str]) -> list[str]: ...
@overload
def _own_ids(scope: Scope, ids: Sequence[str] | None) -> list[str] | None: ...
def _own_ids(scope: Scope, ids: Sequence[str] | None) -> list[str] | None:
    return None if ids is None else [own_id(scope, i) for i in ids]


def _mine(scope: Scope, nodes: Sequence[BaseNode]) -> list[str]:
    """The stored ids of the nodes stamped for ``scope``."""
    return [n.node_id for n in nodes if owned(scope, n.metadata)]


def _of_document(scope: Scope, nodes: Sequence[BaseNode], ref_doc_id: str) -> list[str]:
    mine = [n for n in nodes if owned(scope, n.metadata)]
    return [n.node_id for n in mine if own_id(scope, n.ref_doc_id or "") == ref_doc_id]


def _keep_found(
    scope: Scope, result: VectorStoreQueryResult, found: Sequence[BaseNode]
) -> VectorStoreQueryResult:
    ids = list(result.ids or [])
    mine = {n.node_id for n in found if owned(scope, n.metadata)}
    keep = [i for i, nid in enumerate(ids) if nid in mine]
    return VectorStoreQueryResult(
        nodes=None,
        similarities=_pick(result.similarities, keep),
        ids=_own_ids(scope, _pick(ids, keep)),
    )


def _pick(values: list[Any] | None, keep: list[int]) -> list[Any] | None:
    return None if values is None else [values[i] for i in keep if i < len(values)]
