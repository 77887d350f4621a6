"""Scope a LangChain vector store we do not own to one (tenant, user).

``scope_vectorstore(store, scope)`` returns a ``VectorStore`` that:

- stamps every write with the reserved keys ``muxi_tenant_id``, ``muxi_user_id`` (and
  ``muxi_session_id``); a caller's metadata naming one of them raises ``ReservedKey``;
- keeps ids per user, as the native store does: the caller's id ``"1"`` is stored as
  ``muxi:<hash of tenant and user>:1``, so two users' ids never collide in the shared
  store (PGVector's id is a global primary key: without this, one user's upsert would
  overwrite another's row);
- filters every search in the store's own filter dialect, with the scope ANDed around
  the caller's filter (never appended inside it, where an ``$or`` would widen it); a
  caller filter naming a scope key raises ``ReservedKey``;
- checks ownership before every id-based operation: another user's ids are missing,
  ``delete`` removes none of theirs, and an upsert never lands on a record not stamped
  for this scope;
- verifies every returned document's stamp (anything foreign is dropped and logged),
  then strips the reserved keys and gives back the caller's own ids;
- applies the one scope rule (``muxi_isolation.context.resolve``) on every call: a
  ``use_scope`` or a running config's ``configurable["user_id"]`` naming another user than
  the bound scope is ``ScopeViolation``, never silently overridden.

Dialects known out of the box: ``InMemoryVectorStore`` (a callable filter; the caller may
pass a callable, which sees documents without the reserved keys, or a dict in the
project's dialect) and langchain-postgres ``PGVector`` (its ``$and``/``$eq`` dict). Others
can be added with ``register_filter_dialect``; a store with no dialect, or without
``get_by_ids``/``delete``, raises ``UnsupportedStore`` naming what is missing.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from muxi_isolation import policy
from muxi_isolation import policy_foreign as foreign
from muxi_isolation.context import resolve
from muxi_isolation.errors import (
    InvalidFilter,
    InvalidInput,
    UnsupportedStore,
)
from muxi_isolation.filters import matches
from muxi_isolation.scope import Scope

from .._plans import Plan, step, twins
from ._config import config_scope
from ._texts import AddTexts, add_texts_twins, listed
from .vectorstore import MuxiRetriever

__all__ = [
    "FilterDialect",
    "ScopedVectorStore",
    "UnsupportedStore",
    "register_filter_dialect",
    "scope_vectorstore",
]

View = Callable[[Document], "Document | None"]
P = ParamSpec("P")
R = TypeVar("R")


class FilterDialect(Protocol):
    """How to express "this scope AND the caller's filter" in one store's filter language."""

    def scoped(self, scope: Scope, caller: Any, view: View) -> Any:
        """The native filter to pass as ``filter=``. ``view`` maps a stored document to
        what the caller may see of it, or ``None`` if it is not the scope's."""
        ...


class CallableDialect:
    """Stores whose ``filter`` is a ``Callable[[Document], bool]`` (``InMemoryVectorStore``)."""

    def scoped(self, scope: Scope, caller: Any, view: View) -> Callable[[Document], bool]:
        if caller is None or callable(caller):
            test = caller
        elif isinstance(caller, Mapping):
            node = policy.read_filter(caller)

            def test(doc: Document) -> bool:
                return matches(node, doc.metadata)

        else:
            raise InvalidFilter("filter must be a callable or a dict")

        tenant, user, prefix = scope.tenant_id, scope.user_id, policy.foreign_id_prefix(scope)

        def scoped_filter(doc: Document) -> bool:
            # Runs on every stored document, so ownership (the checks of the store's view:
            # stamp, then id namespace) is tested inline; a view is built only for the
            # caller's test. Returned documents are verified again through the view.
            metadata = doc.metadata
            if metadata.get(policy.TENANT_KEY) != tenant or metadata.get(policy.USER_KEY) != user:
                return False
            if doc.id is not None and not doc.id.startswith(prefix):
                return False
            if test is None:
                return True
            visible = view(doc)
            return visible is not None and bool(test(visible))

        return scoped_filter


def _field_keys(node: Any) -> Iterator[str]:
    """Every field name anywhere in a Mongo-style dict filter (operators start with $)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidFilter("filter keys must be strings")
            if not key.startswith("$"):
                yield key
            yield from _field_keys(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _field_keys(item)


class MongoDialect:
    """Stores whose ``filter`` is a Mongo-style dict with ``$and``/``$eq`` (``PGVector``)."""

    def scoped(self, scope: Scope, caller: Any, view: View) -> dict[str, Any]:
        if caller is not None and not isinstance(caller, Mapping):
            raise InvalidFilter("filter must be a dict")
        foreign.refuse_filter_keys(_field_keys(caller))
        stamp = policy.scope_metadata(scope.user())
        clauses: list[Any] = [{key: {"$eq": value}} for key, value in stamp.items()]
        if caller:
            clauses.append(dict(caller))
        return {"$and": clauses}


_DIALECTS: dict[str, FilterDialect] = {
    "langchain_core.vectorstores.in_memory.InMemoryVectorStore": CallableDialect(),
    "langchain_postgres.vectorstores.PGVector": MongoDialect(),
}


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_filter_dialect(store_class: type | str, dialect: FilterDialect) -> None:
    """Teach ``scope_vectorstore`` a store's filter language (subclasses inherit it)."""
    name = store_class if isinstance(store_class, str) else _class_name(store_class)
    _DIALECTS[name] = dialect


def _dialect_for(store: VectorStore) -> FilterDialect:
    for cls in type(store).__mro__:
        dialect = _DIALECTS.get(_class_name(cls))
        if dialect is not None:
            return dialect
    raise UnsupportedStore(
        f"cannot scope {type(store).__name__}: no metadata filter dialect is registered for "
        "it, so its searches could not be limited to one user; register one with "
        "register_filter_dialect()"
    )


def _check_methods(store: VectorStore) -> None:
    for name in ("get_by_ids", "delete"):
        if getattr(type(store), name) is getattr(VectorStore, name):
            raise UnsupportedStore(
                f"cannot scope {type(store).__name__}: it does not implement {name}(), "
                "which the ownership checks need"
            )


def _passed_on(
    search: Callable[[VectorStore], Callable[P, R]],
    visible: Callable[[ScopedVectorStore, R], R],
) -> Callable[Concatenate[ScopedVectorStore, P], Plan[R]]:
    """The plan of a search the wrapped store answers: ``search(store)`` (and its ``a``
    twin) under the scope's filter, the caller's ``filter=`` inside it; ``visible`` verifies
    every hit. It takes the arguments ``VectorStore`` declares for that search."""
    model: Any = search(cast(Any, VectorStore))  # on the class: its name and signature
    name = model.__name__

    def plan(self: ScopedVectorStore, /, *args: P.args, **kwargs: P.kwargs) -> Plan[R]:
        s, scoped = self.store, self._filter(kwargs.pop("filter", None))
        pair = search(s), getattr(s, f"a{name}")
        found: R = yield from step(*pair, *args, filter=scoped, **kwargs)
        return visible(self, found)

    made: Any = plan  # named as the method it makes
    made.__name__, made.__qualname__ = f"_{name}", f"ScopedVectorStore._{name}"
    made.__signature__ = inspect.signature(model)
    return plan


class ScopedVectorStore(VectorStore):
    """A foreign ``VectorStore`` seen by one (tenant, user). Build it with
    ``scope_vectorstore``; the module docstring lists what it guarantees."""

    def __init__(
        self, store: VectorStore, scope: Scope, *, dialect: FilterDialect | None = None
    ) -> None:
        if not isinstance(store, VectorStore):
            raise UnsupportedStore(f"{type(store).__name__} is not a LangChain VectorStore")
        if isinstance(store, ScopedVectorStore):
            raise UnsupportedStore("this store is scoped already: use it directly")
        _check_methods(store)
        self.store = store
        self.scope = policy.require_scope(scope)
        self.dialect = dialect if dialect is not None else _dialect_for(store)
        self._prefix = policy.foreign_id_prefix(self.scope)

    @property
    def embeddings(self) -> Embeddings | None:
        return self.store.embeddings

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self.store._select_relevance_score_fn()

    def as_retriever(self, **kwargs: Any) -> MuxiRetriever:
        """A retriever whose ``invoke`` makes its config the running one, as for the native
        store, so a config naming another user is refused."""
        tags = kwargs.pop("tags", None) or self._get_retriever_tags()
        return MuxiRetriever(vectorstore=self, tags=tags, **kwargs)

    def _agree(self) -> None:
        """Every other source of this call must name the bound user (and session)."""
        resolve(self.scope, config_scope())

    # -- the pure parts: ids, stamps, views

    def _stored_id(self, caller_id: str) -> str:
        return self._prefix + caller_id

    def _view(self, doc: Document) -> Document | None:
        """What the caller sees of a stored document, or ``None`` if it is not theirs."""
        if not policy.verify_metadata(self.scope, doc.metadata):
            return None
        caller_id = None
        if doc.id is not None:
            if not doc.id.startswith(self._prefix):
                return None
            caller_id = doc.id[len(self._prefix) :]
        metadata = foreign.unstamp(doc.metadata)
        return Document(id=caller_id, page_content=doc.page_content, metadata=metadata)

    def _visible(self, docs: Iterable[Document]) -> list[Document]:
        return [d for d, _ in self._visible_scored((doc, 0.0) for doc in docs)]

    def _visible_scored(
        self, hits: Iterable[tuple[Document, float]]
    ) -> list[tuple[Document, float]]:
        kept = []
        for doc, score in hits:
            visible = self._view(doc)
            if visible is not None:
                kept.append((visible, score))
            else:
                foreign.dropped(self.scope, "document", type(self.store).__name__, doc.id)
        return kept

    def _filter(self, caller: Any) -> Any:
        self._agree()  # every search builds its filter here first
        return self.dialect.scoped(self.scope, caller, self._view)

    def _stamped(
        self, documents: Sequence[Document], ids: Sequence[str | None] | None
    ) -> tuple[list[Document], list[str]]:
        """Copies stamped with the scope under stored ids, and the caller's ids."""
        self._agree()
        if ids is not None and len(ids) != len(documents):
            raise InvalidInput(f"got {len(ids)} ids for {len(documents)} documents", field="ids")
        given = ids if ids is not None else [d.id for d in documents]
        caller_ids = [str(i) if i else str(uuid.uuid4()) for i in given]
        stamped = [
            Document(
                id=self._stored_id(cid),
                page_content=doc.page_content,
                metadata=policy.stamp_metadata(self.scope, doc.metadata),
            )
            for doc, cid in zip(documents, caller_ids, strict=True)
        ]
        return stamped, caller_ids

    def _owned_ids(self, existing: Iterable[Document]) -> list[str]:
        return [doc.id for doc in existing if doc.id is not None and self._view(doc) is not None]

    # -- writes and reads: one plan each, both halves made from it (see .._plans)

    def _add_documents(self, /, documents: list[Document], **kwargs: Any) -> Plan[list[str]]:
        """Stamp and upsert; returns the caller's ids."""
        stamped, caller_ids = self._stamped(documents, kwargs.pop("ids", None))
        stored_ids = [d.id or "" for d in stamped]
        if stamped:
            s = self.store
            existing = yield from step(s.get_by_ids, s.aget_by_ids, stored_ids)
            foreign.refuse_taken(self.scope, [doc.metadata for doc in existing])
            yield from step(s.add_documents, s.aadd_documents, stamped, ids=stored_ids, **kwargs)
        return caller_ids

    def _add_batch(self, call: AddTexts) -> Plan[list[str]]:
        docs = _documents(call.texts, call.metadatas)
        return (yield from self._add_documents(docs, ids=call.ids, **call.kwargs))

    def _delete(self, /, ids: list[str] | None = None, **kwargs: Any) -> Plan[bool]:
        """Delete this user's documents among ``ids``; other ids are left untouched.

        A scoped store deletes by id only: without ids, or with a ``filter`` (which the
        wrapped store would ignore or apply to every user), it raises ``InvalidFilter``.
        """
        ids = _delete_ids(ids, kwargs)
        found = yield from self._get_stored(ids)
        owned = self._owned_ids(found)
        if owned:
            yield from step(self.store.delete, self.store.adelete, owned, **kwargs)
        return True

    def _get_by_ids(self, ids: Sequence[str], /) -> Plan[list[Document]]:
        return self._visible((yield from self._get_stored(ids)))

    def _get_stored(self, ids: Sequence[str]) -> Plan[list[Document]]:
        self._agree()
        s = self.store
        return (yield from step(s.get_by_ids, s.aget_by_ids, [self._stored_id(i) for i in ids]))

    _similarity_search = _passed_on(lambda s: s.similarity_search, _visible)
    _similarity_search_with_score = _passed_on(
        lambda s: s.similarity_search_with_score, _visible_scored
    )
    _similarity_search_by_vector = _passed_on(lambda s: s.similarity_search_by_vector, _visible)
    _max_marginal_relevance_search = _passed_on(lambda s: s.max_marginal_relevance_search, _visible)
    _max_marginal_relevance_search_by_vector = _passed_on(
        lambda s: s.max_marginal_relevance_search_by_vector, _visible
    )

    add_documents, aadd_documents = twins(_add_documents)
    add_texts, aadd_texts = add_texts_twins(_add_batch)
    delete, adelete = twins(_delete)
    get_by_ids, aget_by_ids = twins(_get_by_ids)
    similarity_search, asimilarity_search = twins(_similarity_search)
    similarity_search_with_score, asimilarity_search_with_score = twins(
        _similarity_search_with_score
    )
    similarity_search_by_vector, asimilarity_search_by_vector = twins(_similarity_search_by_vector)
    max_marginal_relevance_search, amax_marginal_relevance_search = twins(
        _max_marginal_relevance_search
    )
    max_marginal_relevance_search_by_vector, amax_marginal_relevance_search_by_vector = twins(
        _max_marginal_relevance_search_by_vector
    )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> ScopedVectorStore:
        raise UnsupportedStore(
            "build the store first, then wrap it: scope_vectorstore(store, scope)"
        )


def _delete_ids(ids: list[str] | None, kwargs: Mapping[str, Any]) -> list[str]:
    """A scoped delete's ids; a filter would be ignored, or applied to every user, by the
    wrapped store."""
    if "filter" in kwargs or "where" in kwargs:
        raise InvalidFilter("a scoped store deletes by ids only, not by filter")
    if ids is None:
        raise InvalidFilter("delete() on a scoped store needs ids")
    return ids


def _documents(texts: Iterable[str], metadatas: list[dict[str, Any]] | None) -> list[Document]:
    texts = listed(texts, metadatas)
    metas = metadatas if metadatas is not None else [{} for _ in texts]
    return [
        Document(page_content=t, metadata=dict(m or {})) for t, m in zip(texts, metas, strict=True)
    ]


def scope_vectorstore(
    store: VectorStore, scope: Scope, *, dialect: FilterDialect | None = None
) -> ScopedVectorStore:
    """``store`` as seen by ``scope``'s (tenant, user); see the module docstring."""
    return ScopedVectorStore(store, scope, dialect=dialect)
