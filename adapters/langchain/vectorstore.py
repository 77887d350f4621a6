"""A LangChain ``VectorStore`` native on the project's memories, one user at a time.

Each document is a ``Memory`` of one (tenant, user): ``page_content`` is its content,
``metadata`` its metadata and ``id`` its id. Ids are per user, as memories are: two users
may both have a document ``"1"``, and neither can read, overwrite or delete the other's.

Each call acts for the user its sources name (``muxi_isolation.context.resolve``): a scope
bound at construction (``MuxiVectorStore(backend, emb, scope=...)`` or
``store.with_scope(scope)``), ``use_scope`` (``with use_scope(scope):
store.similarity_search(...)``, or the HTTP middleware), and ``configurable["user_id"]`` of
the ``RunnableConfig`` the call runs under (a chain step, or the retriever's ``invoke``):
one unbound retriever serves many users in ``.batch``. Sources naming different users are
``ScopeViolation`` (a bound scope never silently wins); none is ``MissingScope``.

``filter`` takes the project's dict dialect (``muxi_isolation.filters``): equality,
``$eq $ne $lt $lte $gt $gte $in $nin $exists $contains $any $all $text`` and
``$and $or $not``, compiled to bound parameters by SQL backends. Filters may not name the
scope (``tenant_id``, ``user_id``, ``session_id``, ``muxi_*``): ``ReservedKey``.

Scores from ``similarity_search_with_score`` are cosine similarities in [-1, 1], higher is
closer; relevance scores map them to [0, 1] with ``(1 + s) / 2`` unless you pass your
own ``relevance_score_fn``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any, ClassVar, Concatenate, ParamSpec

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from pydantic import model_validator

from muxi_isolation import policy
from muxi_isolation.context import resolve
from muxi_isolation.errors import InvalidFilter, InvalidInput, UnsupportedStore
from muxi_isolation.records import Memory
from muxi_isolation.scope import Scope
from muxi_isolation.stores.base import Backend, FilterSpec, Scored

from .._owned import OwnsBackend, Storage, unpack
from .._plans import Plan, step, twins
from ._config import arun_with_config, config_scope, run_with_config
from ._mmr import mmr
from ._texts import AddTexts, add_texts_twins, listed

__all__ = ["MuxiRetriever", "MuxiVectorStore"]

P = ParamSpec("P")

_HINT = (
    "no user for this call: bind a scope, pass configurable user_id in the RunnableConfig, "
    "or set one with use_scope()"
)


def similarity_to_relevance(similarity: float) -> float:
    return min(1.0, max(0.0, (1.0 + similarity) / 2.0))


def _no_extra(kwargs: dict[str, Any], method: str) -> None:
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword arguments: {sorted(kwargs)}")


def _check_delete(ids: Sequence[str] | None, filter: FilterSpec) -> None:
    """A delete names ids or a filter that selects something, never all of a user's data."""
    if filter is not None:
        policy.delete_filter(filter)
    elif ids is None:
        raise InvalidFilter("delete() needs ids or a filter")


def _batch(
    texts: Iterable[str], metadatas: Sequence[dict[str, Any]] | None, ids: Sequence[Any] | None
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Validated texts, metadata copies and ids (a uuid4 where none was given)."""
    texts = listed(texts, metadatas)
    if ids is not None and len(ids) != len(texts):
        raise InvalidInput(f"got {len(ids)} ids for {len(texts)} texts", field="ids")
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInput(f"texts must be strings, not {type(text).__name__}", field="texts")
    metas = [dict(m or {}) for m in metadatas] if metadatas is not None else [{} for _ in texts]
    for meta in metas:
        policy.check_metadata(meta)  # fail before anything is embedded
    id_list = [str(i) if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
    return texts, metas, id_list


def _memories(
    texts: list[str], metas: list[dict[str, Any]], ids: list[str], vectors: list[list[float]]
) -> list[Memory]:
    """One memory per id; a repeated id in one batch keeps its last document."""
    if len(vectors) != len(texts):
        raise InvalidInput(
            f"the embedding returned {len(vectors)} vectors for {len(texts)} texts",
            field="embedding",
        )
    latest = {i: n for n, i in enumerate(ids)}
    return [
        Memory(ids[n], texts[n], metas[n], [float(x) for x in vectors[n]])
        for n in sorted(latest.values())
    ]


def _document(memory: Memory) -> Document:
    return Document(id=memory.id, page_content=memory.content, metadata=dict(memory.metadata))


def _chosen(query: list[float], hits: list[Scored], k: int, lambda_mult: float) -> list[Document]:
    with_vectors = [m for m, _ in hits if m.embedding is not None]
    picks = mmr(query, [m.embedding or [] for m in with_vectors], k, lambda_mult)
    return [_document(with_vectors[i]) for i in picks]


def _unscored(
    scored: Callable[Concatenate[MuxiVectorStore, P], Plan[list[tuple[Document, float]]]],
    doc: str | None = None,
) -> Callable[Concatenate[MuxiVectorStore, P], Plan[list[Document]]]:
    """The plan of ``scored``'s search without the scores: it calls the public scored pair
    (so a subclass's override and the audit guard see the call) with the same arguments."""
    name = scored.__name__.removeprefix("_")

    def plan(self: MuxiVectorStore, /, *args: P.args, **kwargs: P.kwargs) -> Plan[list[Document]]:
        pair = getattr(self, name), getattr(self, f"a{name}")
        hits: list[tuple[Document, float]] = yield from step(*pair, *args, **kwargs)
        return [d for d, _ in hits]

    made: Any = plan  # named as the method it makes, with the scored search's signature
    made.__name__ = "_" + name.replace("_with_score", "")
    made.__qualname__ = f"{scored.__qualname__.rpartition('.')[0]}.{made.__name__}"
    made.__module__, made.__doc__ = scored.__module__, doc
    made.__signature__ = inspect.signature(scored)
    return plan


class MuxiVectorStore(OwnsBackend, VectorStore):
    """Scoped semantic memory for LangChain: every call acts for one (tenant, user).

    Writes are stamped with the scope (its session, if any, records where a memory was
    made); reads see the user's memories only, whatever the filter. See the module
    docstring for the scope, filter and score conventions.

    ``MuxiVectorStore.from_url("sqlite:///app.db", embeddings, embedding_dimension=256)``
    opens (and ``close()`` closes) its own storage; ``MuxiVectorStore(backend, embeddings)``
    shares one.
    """

    def __init__(
        self,
        backend: Storage,
        embedding: Embeddings,
        *,
        scope: Scope | None = None,
        relevance_score_fn: Callable[[float], float] | None = None,
    ) -> None:
        self.backend = unpack(backend)[0]
        self.embedding = embedding
        self.scope = None if scope is None else policy.require_scope(scope)
        self.relevance_score_fn = relevance_score_fn or similarity_to_relevance

    def _storage_backend(self) -> Backend:
        return self.backend

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def with_scope(self, scope: Scope) -> MuxiVectorStore:
        """The same backend and embedding, bound to another scope."""
        return MuxiVectorStore(
            self.backend, self.embedding, scope=scope, relevance_score_fn=self.relevance_score_fn
        )

    def current_scope(self) -> Scope:
        """The scope every present source names: the bound one, ``use_scope``'s and the
        running config's; ``ScopeViolation`` if two disagree, ``MissingScope`` if none."""
        return resolve(self.scope, config_scope(), hint=_HINT)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self.relevance_score_fn

    # -- each operation is one plan for both halves (``_no_extra`` names the sync one)

    def _add_batch(self, call: AddTexts) -> Plan[list[str]]:
        """Embed and upsert: an id this user already has is replaced, never duplicated."""
        _no_extra(call.kwargs, "add_texts")
        scope = self.current_scope()
        texts, metas, id_list = _batch(call.texts, call.metadatas, call.ids)
        if not texts:
            return []
        e, b = self.embedding, self.backend
        vectors = yield from step(e.embed_documents, e.aembed_documents, texts)
        memories = _memories(texts, metas, id_list, vectors)
        yield from step(b.upsert_memories, b.aupsert_memories, scope, memories)
        return id_list

    add_texts, aadd_texts = add_texts_twins(_add_batch)

    def _delete(
        self, /, ids: list[str] | None = None, *, filter: FilterSpec = None, **kwargs: Any
    ) -> Plan[bool]:
        """Delete this user's documents by id and/or filter; other users' ids are missing.

        With neither ids nor a filter, or a filter that matches everything (``{}``), nothing
        is deleted and ``InvalidFilter`` (a ``ValueError``) is raised: to forget a whole user
        use the ``Isolation`` facade.
        """
        _no_extra(kwargs, "delete")
        scope = self.current_scope()
        _check_delete(ids, filter)
        b = self.backend
        yield from step(b.delete_memories, b.adelete_memories, scope, ids=ids, filter=filter)
        return True

    delete, adelete = twins(_delete)

    def _get_by_ids(self, ids: Sequence[str], /) -> Plan[list[Document]]:
        b = self.backend
        found = yield from step(b.get_memories, b.aget_memories, self.current_scope(), ids)
        return [_document(m) for m in found]

    get_by_ids, aget_by_ids = twins(_get_by_ids)

    # -- similarity: the by-query forms embed, then call the by-vector ones (public, so a
    # subclass's override and the audit guard see the call as before)

    def _similarity_search_with_score_by_vector(
        self, /, embedding: list[float], k: int = 4, *, filter: FilterSpec = None, **kwargs: Any
    ) -> Plan[list[tuple[Document, float]]]:
        _no_extra(kwargs, "similarity_search")
        scope, b = self.current_scope(), self.backend
        hits = yield from step(
            b.search_memories, b.asearch_memories, scope, embedding, k, filter=filter
        )
        return [(_document(m), score) for m, score in hits]

    similarity_search_with_score_by_vector, asimilarity_search_with_score_by_vector = twins(
        _similarity_search_with_score_by_vector
    )

    def _similarity_search_with_score(
        self, /, query: str, k: int = 4, *, filter: FilterSpec = None, **kwargs: Any
    ) -> Plan[list[tuple[Document, float]]]:
        e = self.embedding
        vector = yield from step(e.embed_query, e.aembed_query, query)
        by_vector = self.similarity_search_with_score_by_vector
        aby_vector = self.asimilarity_search_with_score_by_vector
        return (yield from step(by_vector, aby_vector, vector, k, filter=filter, **kwargs))

    similarity_search_with_score, asimilarity_search_with_score = twins(
        _similarity_search_with_score
    )

    _similarity_search = _unscored(_similarity_search_with_score)
    similarity_search, asimilarity_search = twins(_similarity_search)

    _similarity_search_by_vector = _unscored(_similarity_search_with_score_by_vector)
    similarity_search_by_vector, asimilarity_search_by_vector = twins(_similarity_search_by_vector)

    # -- hybrid: the user's vector ranking and full-text ranking, fused (issue 18)

    def _hybrid_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: FilterSpec = None,
        alpha: float = 0.5,
        text_k: int | None = None,
    ) -> Plan[list[tuple[Document, float]]]:
        """The ``k`` documents best by ``query``'s embedding and its words together, fused
        by reciprocal rank (``alpha`` weights the vector side: 1 is vector search alone, 0
        the words'); ``text_k``: the word ranking's depth (default ``k``). Scores are the
        fused ones (small positive numbers, higher is better), not cosine similarities."""
        scope, e, b = self.current_scope(), self.embedding, self.backend
        vector = yield from step(e.embed_query, e.aembed_query, query)
        hits = yield from step(
            b.search_memories,
            b.asearch_memories,
            scope,
            vector,
            k,
            filter=filter,
            text=query,
            mode="hybrid",
            alpha=alpha,
            text_k=text_k,
        )
        return [(_document(m), score) for m, score in hits]

    hybrid_search_with_score, ahybrid_search_with_score = twins(_hybrid_search_with_score)

    _hybrid_search = _unscored(
        _hybrid_search_with_score,
        """``hybrid_search_with_score`` without the scores; the retriever's
        ``search_type="hybrid"``.""",
    )
    hybrid_search, ahybrid_search = twins(_hybrid_search)

    # -- maximal marginal relevance

    def _max_marginal_relevance_search_by_vector(
        self,
        /,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: FilterSpec = None,
        **kwargs: Any,
    ) -> Plan[list[Document]]:
        _no_extra(kwargs, "max_marginal_relevance_search")
        scope, b = self.current_scope(), self.backend
        depth = max(k, fetch_k)
        hits = yield from step(
            b.search_memories, b.asearch_memories, scope, embedding, depth, filter=filter
        )
        return _chosen(embedding, hits, k, lambda_mult)

    max_marginal_relevance_search_by_vector, amax_marginal_relevance_search_by_vector = twins(
        _max_marginal_relevance_search_by_vector
    )

    def _max_marginal_relevance_search(
        self,
        /,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: FilterSpec = None,
        **kwargs: Any,
    ) -> Plan[list[Document]]:
        e = self.embedding
        vector = yield from step(e.embed_query, e.aembed_query, query)
        by_vector = self.max_marginal_relevance_search_by_vector
        aby_vector = self.amax_marginal_relevance_search_by_vector
        return (
            yield from step(
                by_vector, aby_vector, vector, k, fetch_k, lambda_mult, filter=filter, **kwargs
            )
        )

    max_marginal_relevance_search, amax_marginal_relevance_search = twins(
        _max_marginal_relevance_search
    )

    # -- construction

    def _from_texts(  # made a classmethod pair below
        cls: Any,
        /,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        backend: Backend | None = None,
        scope: Scope | None = None,
        **kwargs: Any,
    ) -> Plan[MuxiVectorStore]:
        """A store on ``backend`` (required) holding ``texts`` for ``scope``."""
        if not isinstance(backend, Backend):
            raise UnsupportedStore("from_texts() needs backend=<a muxi_isolation Backend>")
        store: MuxiVectorStore = cls(backend, embedding, scope=scope, **kwargs)
        yield from step(store.add_texts, store.aadd_texts, texts, metadatas, ids=ids)
        return store

    _from, _afrom = twins(_from_texts)
    from_texts, afrom_texts = classmethod(_from), classmethod(_afrom)
    del _from, _afrom

    def as_retriever(self, **kwargs: Any) -> MuxiRetriever:
        """A retriever over this store; ``k=`` may be given directly, as well as in
        ``search_kwargs``."""
        tags = kwargs.pop("tags", None) or self._get_retriever_tags()
        return MuxiRetriever(vectorstore=self, tags=tags, **kwargs)


class MuxiRetriever(VectorStoreRetriever):
    """``VectorStoreRetriever`` that also takes the number of results as ``k``.

    ``MuxiRetriever(vectorstore=store, k=3)`` is ``search_kwargs={"k": 3}``; ``invoke(q,
    k=1)`` overrides either for one call. The user is the one the store resolves, with the
    config ``invoke``/``batch`` gets as a source: ``retriever.batch(qs, [{"configurable":
    {"user_id": "t:alice"}}, ...])`` answers each item for its own user.
    ``search_type="hybrid"`` (with ``alpha``, ``text_k`` in ``search_kwargs``) runs
    ``MuxiVectorStore.hybrid_search``.
    """

    allowed_search_types: ClassVar[Collection[str]] = (
        *VectorStoreRetriever.allowed_search_types,
        "hybrid",
    )
    k: int | None = None

    # BaseRetriever.invoke does not make its config the running one (a chain step does):
    # make it so, for the store to read configurable user_id.
    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return run_with_config(config, partial(super().invoke, input, config, **kwargs))

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return await arun_with_config(config, super().ainvoke(input, config, **kwargs))

    def _relevant(self, /, query: str, *, run_manager: Any, **kwargs: Any) -> Plan[list[Document]]:
        if self.search_type != "hybrid":
            base: Any = super()  # each half passes its own kind of run_manager
            plain, aplain = base._get_relevant_documents, base._aget_relevant_documents
            found: list[Document] = yield from step(
                plain, aplain, query, run_manager=run_manager, **kwargs
            )
            return found
        store = self._store()
        options = self.search_kwargs | kwargs
        return (yield from step(store.hybrid_search, store.ahybrid_search, query, **options))

    _get_relevant_documents, _aget_relevant_documents = twins(_relevant, "_get_relevant_documents")

    def _store(self) -> MuxiVectorStore:
        store = self.vectorstore
        if not isinstance(store, MuxiVectorStore):
            raise UnsupportedStore("search_type='hybrid' needs a muxi_isolation MuxiVectorStore")
        return store

    @model_validator(mode="after")
    def _merge_k(self) -> MuxiRetriever:
        if self.k is not None:
            if self.search_kwargs.get("k", self.k) != self.k:
                raise ValueError("k and search_kwargs['k'] disagree")
            self.search_kwargs = {**self.search_kwargs, "k": self.k}
        return self
