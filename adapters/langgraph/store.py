"""A LangGraph store whose namespaces always live under the caller's (tenant, user).

    store = MuxiStore(backend, index={"dims": 384, "embed": embeddings, "fields": ["text"]})
    store.for_user(scope).put(("memories",), "m1", {"text": "likes Python"})

User A's ``("memories",)`` and user B's ``("memories",)`` are different namespaces: the
(tenant, user) is kept in separate columns beside the namespace, never inside it, and
namespaces are compared as tuples, label by label, by equality (never a string prefix or
``LIKE``). Labels are stored exactly (``%``, ``_``, ``.``, ``:``, ``*``, unicode);
LangGraph's own ``put``/``get`` refuse ``.`` and empty labels before we see them, ``batch``
takes any non-empty label. In listing rules (``list_namespaces``) ``*`` is LangGraph's
wildcard for one label; a search prefix is literal.

Filters take LangGraph's form on top-level value keys (``{"k": v}``, ``{"k": {"$gt": 1}}``,
``$eq $ne $gt $gte $lt $lte``) and run as bound SQL; nested-object and list filters raise
``InvalidFilter``. A natural-language ``query`` (with ``index``) ranks the caller's
matching items exactly by cosine similarity, an item scoring its best indexed field, so a
search gives ``min(limit, matches)``; items without vectors come after. TTL is supported
(``ttl`` in minutes, refreshed on read unless ``refresh_ttl=False``); an expired item is
never returned, listed or found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    NotProvided,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)

from muxi_isolation import policy
from muxi_isolation.errors import InvalidInput
from muxi_isolation.filters import parse_filter
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import Clock, utc_now
from muxi_isolation.stores.base import Backend
from muxi_isolation.stores.graph import (
    ItemQuery,
    ItemRef,
    MatchRule,
    StoreItem,
    check_key,
    check_namespace,
    expiry,
    rank_items,
)

from .._owned import OwnsBackend, Storage, unpack
from .._plans import Plan, step, twins
from ._scope import HINT, bound_copy, config_scopes, graph_config, resolve, user_scope

__all__ = ["MuxiStore"]

_Ranked = list[tuple[StoreItem, float | None]]


@dataclass
class _Plan:
    """A batch sorted by kind; reads run first, then every put, as LangGraph's stores do."""

    gets: list[tuple[int, GetOp]] = field(default_factory=list)
    searches: list[tuple[int, SearchOp]] = field(default_factory=list)
    lists: list[tuple[int, ListNamespacesOp]] = field(default_factory=list)
    puts: dict[ItemRef, PutOp] = field(default_factory=dict)


class MuxiStore(OwnsBackend, BaseStore):
    """Long-term memory per (tenant, user) on any backend, with optional semantic search.

    ``index``: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``); ``ttl``: its
    ``TTLConfig`` (``default_ttl``, ``refresh_on_read``). Each call acts for the user its
    sources name: a bound scope (``for_user``), ``use_scope()`` (the middleware sets it
    around model and tool calls), and inside a graph the runtime context and
    ``configurable["user_id"]``; two that disagree are ``ScopeViolation``.
    ``with MuxiStore.from_url(url, index=...) as store:`` (or ``async with``) opens and closes
    storage of its own, like ``PostgresStore.from_conn_string``.
    """

    supports_ttl = True

    def __init__(
        self,
        backend: Storage,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        scope: Scope | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.backend = unpack(backend)[0]
        self.index_config = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        paths = (index or {}).get("fields") or ["$"]
        self._fields = [(p, p if p == "$" else tokenize_path(p)) for p in paths]
        self.ttl_config = ttl
        self.scope = user_scope(scope)
        self.clock = clock

    def for_user(self, scope: Scope) -> MuxiStore:
        """The same store bound to one user: every call acts for it alone."""
        return bound_copy(self, scope)

    def _storage_backend(self) -> Backend:
        return self.backend

    def _user(self) -> Scope:
        return resolve(self.scope, *config_scopes(graph_config()), hint=HINT).user()

    # -- pure planning ---------------------------------------------------------------------

    def _plan(self, ops: Iterable[Op]) -> tuple[list[Result], _Plan]:
        plan = _Plan()
        results: list[Result] = []
        for i, op in enumerate(ops):
            results.append(None)
            if isinstance(op, GetOp):
                plan.gets.append((i, op))
            elif isinstance(op, SearchOp):
                plan.searches.append((i, op))
            elif isinstance(op, ListNamespacesOp):
                policy.check_int(op.limit, "limit", minimum=0)  # paged here, not by the storage
                policy.check_int(op.offset, "offset", minimum=0)
                plan.lists.append((i, op))
            elif isinstance(op, PutOp):
                ref = (check_namespace(op.namespace), check_key(op.key))
                plan.puts.pop(ref, None)
                plan.puts[ref] = op  # the last put of a key wins
            else:
                raise InvalidInput(f"unknown store operation: {type(op).__name__}", field="op")
        return results, plan

    def _refresh(self, requested: bool | None) -> bool:
        if requested is not None:
            return requested
        return bool((self.ttl_config or {}).get("refresh_on_read", True))

    def _texts(self, op: PutOp) -> list[tuple[str, str]]:
        """(field name, text) pairs to embed for a put, as LangGraph names them."""
        if self.embeddings is None or op.value is None or op.index is False:
            return []
        paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
        out: list[tuple[str, str]] = []
        for path, tokens in paths:
            texts = get_text_at_path(op.value, tokens)
            if len(texts) == 1:
                out.append((path, texts[0]))
            else:
                out += [(f"{path}.{i}", text) for i, text in enumerate(texts)]
        return out

    def _check_dims(self, vectors: Sequence[Sequence[float]]) -> list[list[float]]:
        dims = (self.index_config or {}).get("dims")
        out = [[float(x) for x in v] for v in vectors]
        for v in out:
            if dims is not None and len(v) != dims:
                raise InvalidInput(
                    f"an embedding has {len(v)} dimensions, the index {dims}", field="embedding"
                )
        return out

    def _items(
        self, plan: _Plan, vectors: list[list[float]], now: datetime
    ) -> tuple[list[StoreItem], list[ItemRef]]:
        items: list[StoreItem] = []
        deletes: list[ItemRef] = []
        at = 0
        for (ns, key), op in plan.puts.items():
            if op.value is None:
                deletes.append((ns, key))
                continue
            texts = self._texts(op)
            embedded = {name: vectors[at + j] for j, (name, _) in enumerate(texts)}
            at += len(texts)
            ttl = None if isinstance(op.ttl, NotProvided) else op.ttl
            items.append(
                StoreItem(
                    ns, key, dict(op.value), now, now, expiry(now, ttl), ttl, embedded or None
                )
            )
        return items, deletes

    def _to_embed(self, plan: _Plan) -> list[str]:
        return [text for op in plan.puts.values() for _, text in self._texts(op)]

    @staticmethod
    def _item(item: StoreItem) -> Item:
        assert item.created_at is not None and item.updated_at is not None
        return Item(
            value=item.value,
            key=item.key,
            namespace=item.namespace,
            created_at=item.created_at,
            updated_at=item.updated_at,
        )

    @staticmethod
    def _hit(item: StoreItem, score: float | None) -> SearchItem:
        assert item.created_at is not None and item.updated_at is not None
        return SearchItem(
            item.namespace, item.key, item.value, item.created_at, item.updated_at, score
        )

    @staticmethod
    def _query(op: SearchOp, vectors: bool) -> ItemQuery:
        return ItemQuery(
            prefix=check_namespace(op.namespace_prefix, empty=True),
            filter=parse_filter(op.filter) if op.filter else None,
            limit=op.limit,
            offset=op.offset,
            vectors=vectors,
        )

    @staticmethod
    def _rules(op: ListNamespacesOp) -> list[MatchRule]:
        return [MatchRule(c.match_type, tuple(c.path)) for c in op.match_conditions or ()]

    @staticmethod
    def _page(namespaces: list[tuple[str, ...]], op: ListNamespacesOp) -> list[tuple[str, ...]]:
        if op.max_depth is not None:
            namespaces = sorted({ns[: op.max_depth] for ns in namespaces})
        return namespaces[op.offset : op.offset + op.limit]

    # -- one plan for both halves (see .._plans)

    def _batch(self, ops: Iterable[Op]) -> Plan[list[Result]]:
        user, now = self._user(), self.clock()
        results, plan = self._plan(ops)
        b = self.backend
        touched: list[StoreItem] = []
        if plan.gets:
            refs = [(op.namespace, op.key) for _, op in plan.gets]
            found = yield from step(b.get_items, b.aget_items, user, refs, now=now)
            by_ref = {(f.namespace, f.key): f for f in found}
            for i, op in plan.gets:
                hit = by_ref.get((tuple(op.namespace), op.key))
                results[i] = None if hit is None else self._item(hit)
                if hit is not None and self._refresh(op.refresh_ttl):
                    touched.append(hit)
        if plan.searches:
            if len(plan.searches) == 1:  # nothing to run concurrently
                searched = [(yield from self._search(user, plan.searches[0][1], now))]
            else:
                searched = yield from step(
                    self._searches, self._asearches, user, plan.searches, now
                )
            for (i, sop), ranked in zip(plan.searches, searched, strict=True):
                results[i] = [self._hit(item, score) for item, score in ranked]
                if self._refresh(sop.refresh_ttl):
                    touched += [item for item, _ in ranked]
        for i, lop in plan.lists:
            rules = self._rules(lop)
            found_ns = yield from step(b.list_namespaces, b.alist_namespaces, user, rules, now=now)
            results[i] = self._page(found_ns, lop)
        if touched:
            yield from step(b.refresh_items, b.arefresh_items, user, touched, now=now)
        if plan.puts:
            texts, e = self._to_embed(plan), self.embeddings
            vectors: list[list[float]] = []
            if texts and e is not None:
                embedded = yield from step(e.embed_documents, e.aembed_documents, texts)
                vectors = self._check_dims(embedded)
            items, deletes = self._items(plan, vectors, now)
            yield from step(b.put_items, b.aput_items, user, items, deletes)
        return results

    batch, abatch = twins(_batch)

    def _search(self, user: Scope, op: SearchOp, now: datetime) -> Plan[_Ranked]:
        b, e = self.backend, self.embeddings
        query = None
        if op.query and e is not None:
            vector = yield from step(e.embed_query, e.aembed_query, op.query)
            query = self._check_dims([vector])[0]
        item_query = self._query(op, query is not None)
        found = yield from step(b.search_items, b.asearch_items, user, item_query, now=now)
        if query is None:
            return [(item, None) for item in found]
        return rank_items(found, query, op.limit, op.offset)

    _ranked, _aranked = twins(_search, "_ranked", "_aranked")

    # The one place the halves differ: the async one runs a batch's searches concurrently.

    def _searches(
        self, user: Scope, ops: list[tuple[int, SearchOp]], now: datetime
    ) -> list[_Ranked]:
        return [self._ranked(user, op, now) for _, op in ops]

    async def _asearches(
        self, user: Scope, ops: list[tuple[int, SearchOp]], now: datetime
    ) -> list[_Ranked]:
        return list(await asyncio.gather(*(self._aranked(user, op, now) for _, op in ops)))
