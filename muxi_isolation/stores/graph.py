"""Storage for agent graphs (LangGraph checkpoints and store items), scoped like the rest.

Framework-neutral: checkpoints and pending writes travel as opaque serialized blobs with
JSON metadata, store items as JSON values under a namespace tuple. Everything belongs to
one (tenant, user), kept in separate fields and compared by equality:

- a *thread* is a session id of that user: another user's thread id does not exist for you;
- a *namespace* is a tuple of labels compared element by element, as a tuple, never as a
  string prefix (LangGraph's own Postgres store leaked across tenants through an unescaped
  ``LIKE`` prefix). Labels are stored exactly: ``%``, ``_``, ``.``, ``:``, ``*``, unicode.

``GraphMethods`` is mixed into ``Backend``: public scoped methods (sync and ``a``-twins) that
fail closed on a missing scope, stamp writes and verify results, over underscored methods
each backend implements, as in ``base``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal, TypeAlias

import numpy as np

from .. import policy
from .._input import check_int
from ..errors import InvalidInput, StorageError
from ..filters import Filter, check_filter
from ..scope import Scope, canonical_id
from .similarity import best_first, cosines, mismatch

__all__ = [
    "CheckpointQuery",
    "CheckpointRecord",
    "GraphMethods",
    "ItemQuery",
    "ItemRef",
    "MatchRule",
    "Namespace",
    "StoreItem",
    "WriteRecord",
    "check_key",
    "check_namespace",
    "decode_namespace",
    "encode_namespace",
    "namespace_matches",
    "rank_items",
]


Namespace: TypeAlias = "tuple[str, ...]"
ItemRef: TypeAlias = "tuple[tuple[str, ...], str]"
WILDCARD = "*"


@dataclass(frozen=True)
class WriteRecord:
    """One pending write of a task, attached to a checkpoint of a thread."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    type: str
    value: bytes
    task_path: str = ""
    scope: Scope | None = None


@dataclass(frozen=True)
class CheckpointRecord:
    """A serialized checkpoint of a thread, its JSON metadata, and (when read) its writes."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    type: str
    checkpoint: bytes
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    scope: Scope | None = None
    writes: tuple[WriteRecord, ...] = ()


@dataclass(frozen=True)
class CheckpointQuery:
    """Which checkpoints to read, newest first. ``thread_id=None`` means all of the user's."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    before: str | None = None
    filter: Filter | None = None
    limit: int | None = None


@dataclass(frozen=True)
class StoreItem:
    """A JSON value under (namespace, key); ``embeddings`` maps an indexed field to a vector.

    ``ttl`` is in minutes (LangGraph's unit); ``expires_at`` is when it lapses unless read
    or written again.
    """

    namespace: Namespace
    key: str
    value: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    ttl: float | None = None
    embeddings: dict[str, list[float]] | None = None
    scope: Scope | None = None


@dataclass(frozen=True)
class MatchRule:
    """A namespace pattern: ``prefix`` or ``suffix``, where a ``*`` label matches any label."""

    kind: Literal["prefix", "suffix"]
    path: Namespace


@dataclass(frozen=True)
class ItemQuery:
    """Store items under namespace ``prefix`` whose value matches ``filter``.

    Without ``vectors`` the storage orders them newest first and applies ``limit`` and
    ``offset``; with ``vectors`` it returns every match with its embeddings, for ranking.
    """

    prefix: Namespace = ()
    filter: Filter | None = None
    limit: int | None = None
    offset: int = 0
    vectors: bool = False


# -- pure helpers, shared by every backend --------------------------------------------------


def check_namespace(namespace: Iterable[object], *, empty: bool = False) -> Namespace:
    """A namespace as a tuple of non-empty labels a database can store, unchanged.

    No normalization: a label is kept and compared exactly as given.
    """
    labels = tuple(namespace)
    if not labels and not empty:
        raise InvalidInput("a namespace needs at least one label", field="namespace")
    for label in labels:
        _check_text(label, "namespace label", "namespace")
    return labels  # type: ignore[return-value]


def check_key(key: object) -> str:
    _check_text(key, "store key", "key")
    assert isinstance(key, str)
    return key


def _check_text(value: object, what: str, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"a {what} must be a non-empty string", field=field)
    if "\x00" in value:
        raise InvalidInput(f"a {what} must not contain NUL", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text, no database stores them
        raise InvalidInput(f"a {what} must be valid Unicode", field=field) from None


def encode_namespace(namespace: Namespace) -> str:
    """The stored form: a JSON array, one-to-one with the tuple, so equality is exact."""
    return json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":"))


def decode_namespace(text: str) -> Namespace:
    """The tuple of a stored namespace; what no write of ours stores is a ``StorageError``."""
    try:
        labels = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StorageError("a stored namespace is not JSON") from exc
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise StorageError("a stored namespace is not a list of labels")
    return tuple(labels)


def namespace_matches(namespace: Namespace, rule: MatchRule) -> bool:
    """Element-wise equality of the rule's labels with the namespace's first or last ones."""
    n = len(rule.path)
    if len(namespace) < n:
        return False
    part = namespace[:n] if rule.kind == "prefix" else namespace[len(namespace) - n :]
    return all(p in (WILDCARD, label) for p, label in zip(rule.path, part, strict=True))


def rank_items(
    items: Sequence[StoreItem], query: Sequence[float], limit: int, offset: int
) -> list[tuple[StoreItem, float | None]]:
    """Best first by cosine similarity, an item scoring its best field; then unscored items.

    Exact over the caller's own matching items, so it always gives ``min(limit, matches)``
    after ``offset``. Items without embeddings fill the page after every scored one, as
    LangGraph's stores do.
    """
    scored = [item for item in items if item.embeddings]
    vectors = [v for item in scored for v in (item.embeddings or {}).values()]
    for vector in vectors:
        if len(vector) != len(query):
            raise mismatch(len(vector), len(query))
    ranked: list[tuple[StoreItem, float | None]] = []
    if vectors:  # each item scores its best field: a max over its run of rows
        starts = np.cumsum([0, *(len(item.embeddings or {}) for item in scored[:-1])])
        scores = cosines(query, np.asarray(vectors, dtype=np.float64))
        per_item = np.maximum.reduceat(scores, starts)
        best = best_first(per_item, offset + limit, lambda i: (scored[i].namespace, scored[i].key))
        ranked = [(scored[i], float(per_item[i])) for i in best]
    ranked += [(item, None) for item in items if not item.embeddings]
    return ranked[offset : offset + limit]


def _verify_checkpoints(user: Scope, records: Iterable[CheckpointRecord]) -> list[CheckpointRecord]:
    kept = policy.verify(user, records)
    return [replace(r, writes=tuple(policy.verify(user, r.writes))) for r in kept]


def _check_limit(limit: int | None, offset: int = 0) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None:
            check_int(value, name, minimum=0)  # 64 bits: what SQLite and PostgreSQL bind


def _thread(thread_id: str) -> str:
    return canonical_id(thread_id, "thread_id")


class GraphMethods:
    """Checkpoints and store items of one (tenant, user). Mixed into ``Backend``."""

    # -- checkpoints --------------------------------------------------------------------

    def put_checkpoint(self, scope: Scope, record: CheckpointRecord) -> None:
        """Insert or replace the checkpoint (thread, namespace, id) of this user."""
        user = policy.require_scope(scope).user()
        self._put_checkpoint(user, _stamp_checkpoint(user, record))

    async def aput_checkpoint(self, scope: Scope, record: CheckpointRecord) -> None:
        user = policy.require_scope(scope).user()
        await self._aput_checkpoint(user, _stamp_checkpoint(user, record))

    def get_checkpoints(self, scope: Scope, query: CheckpointQuery) -> list[CheckpointRecord]:
        """This user's matching checkpoints, newest id first, each with its pending writes."""
        user = policy.require_scope(scope).user()
        _check_limit(query.limit)
        return _verify_checkpoints(user, self._get_checkpoints(user, _check_query(query)))

    async def aget_checkpoints(
        self, scope: Scope, query: CheckpointQuery
    ) -> list[CheckpointRecord]:
        user = policy.require_scope(scope).user()
        _check_limit(query.limit)
        return _verify_checkpoints(user, await self._aget_checkpoints(user, _check_query(query)))

    def put_checkpoint_writes(
        self, scope: Scope, writes: Sequence[WriteRecord], *, replace: bool
    ) -> None:
        """Store writes; ``replace=False`` keeps a write already stored under its key."""
        user = policy.require_scope(scope).user()
        stamped = [_stamp_write(user, w) for w in writes]
        if stamped:
            self._put_checkpoint_writes(user, stamped, replace)

    async def aput_checkpoint_writes(
        self, scope: Scope, writes: Sequence[WriteRecord], *, replace: bool
    ) -> None:
        user = policy.require_scope(scope).user()
        stamped = [_stamp_write(user, w) for w in writes]
        if stamped:
            await self._aput_checkpoint_writes(user, stamped, replace)

    def delete_thread(self, scope: Scope, thread_id: str) -> int:
        """Delete this user's checkpoints and writes of the thread; returns checkpoints gone."""
        user = policy.require_scope(scope).user()
        return self._delete_thread(user, _thread(thread_id))

    async def adelete_thread(self, scope: Scope, thread_id: str) -> int:
        user = policy.require_scope(scope).user()
        return await self._adelete_thread(user, _thread(thread_id))

    def copy_thread(self, scope: Scope, source_thread_id: str, target_thread_id: str) -> int:
        """Copy this user's checkpoints and writes of one thread into another of the same
        user (replacing any of the same id there); returns checkpoints copied. Another
        user's thread is no source: it copies nothing."""
        user = policy.require_scope(scope).user()
        source, target = _thread(source_thread_id), _thread(target_thread_id)
        return 0 if source == target else self._copy_thread(user, source, target)

    async def acopy_thread(self, scope: Scope, source_thread_id: str, target_thread_id: str) -> int:
        user = policy.require_scope(scope).user()
        source, target = _thread(source_thread_id), _thread(target_thread_id)
        return 0 if source == target else await self._acopy_thread(user, source, target)

    def prune_threads(
        self,
        scope: Scope,
        thread_ids: Sequence[str],
        *,
        keep_latest: bool,
        whole_if: Filter | None = None,
    ) -> int:
        """Delete this user's checkpoints of these threads (and their writes): all of them, or
        all but the newest of each namespace, except that a namespace whose newest checkpoint's
        metadata matches ``whole_if`` is kept whole. Returns checkpoints gone."""
        user = policy.require_scope(scope).user()
        threads, whole = _threads(thread_ids), check_filter(whole_if)
        return self._prune_threads(user, threads, keep_latest, whole) if threads else 0

    async def aprune_threads(
        self,
        scope: Scope,
        thread_ids: Sequence[str],
        *,
        keep_latest: bool,
        whole_if: Filter | None = None,
    ) -> int:
        user = policy.require_scope(scope).user()
        threads, whole = _threads(thread_ids), check_filter(whole_if)
        return await self._aprune_threads(user, threads, keep_latest, whole) if threads else 0

    def delete_checkpoints(self, scope: Scope, query: CheckpointQuery) -> int:
        """Delete this user's checkpoints matching ``query`` (and their writes); returns
        checkpoints gone. The query names a thread or a filter, and has no limit."""
        user = policy.require_scope(scope).user()
        return self._delete_checkpoints(user, _check_delete(query))

    async def adelete_checkpoints(self, scope: Scope, query: CheckpointQuery) -> int:
        user = policy.require_scope(scope).user()
        return await self._adelete_checkpoints(user, _check_delete(query))

    # -- store items --------------------------------------------------------------------

    def get_items(self, scope: Scope, refs: Sequence[ItemRef], *, now: datetime) -> list[StoreItem]:
        """This user's items among ``refs`` that have not expired by ``now``."""
        user = policy.require_scope(scope).user()
        checked = [(check_namespace(ns), check_key(k)) for ns, k in refs]
        return policy.verify(user, self._get_items(user, checked, now)) if checked else []

    async def aget_items(
        self, scope: Scope, refs: Sequence[ItemRef], *, now: datetime
    ) -> list[StoreItem]:
        user = policy.require_scope(scope).user()
        checked = [(check_namespace(ns), check_key(k)) for ns, k in refs]
        if not checked:
            return []
        return policy.verify(user, await self._aget_items(user, checked, now))

    def put_items(
        self, scope: Scope, items: Sequence[StoreItem], deletes: Sequence[ItemRef]
    ) -> None:
        """Upsert ``items`` (creation time kept) and delete ``deletes``, in one transaction."""
        user = policy.require_scope(scope).user()
        stamped, gone = _stamp_items(user, items, deletes)
        if stamped or gone:
            self._put_items(user, stamped, gone)

    async def aput_items(
        self, scope: Scope, items: Sequence[StoreItem], deletes: Sequence[ItemRef]
    ) -> None:
        user = policy.require_scope(scope).user()
        stamped, gone = _stamp_items(user, items, deletes)
        if stamped or gone:
            await self._aput_items(user, stamped, gone)

    def search_items(self, scope: Scope, query: ItemQuery, *, now: datetime) -> list[StoreItem]:
        user = policy.require_scope(scope).user()
        return policy.verify(user, self._search_items(user, _check_items(query), now))

    async def asearch_items(
        self, scope: Scope, query: ItemQuery, *, now: datetime
    ) -> list[StoreItem]:
        user = policy.require_scope(scope).user()
        return policy.verify(user, await self._asearch_items(user, _check_items(query), now))

    def refresh_items(self, scope: Scope, items: Sequence[StoreItem], *, now: datetime) -> None:
        """Push the TTL of these items of this user forward from ``now``."""
        user = policy.require_scope(scope).user()
        if any(i.ttl is not None for i in items):
            self._refresh_items(user, [i for i in items if i.ttl is not None], now)

    async def arefresh_items(
        self, scope: Scope, items: Sequence[StoreItem], *, now: datetime
    ) -> None:
        user = policy.require_scope(scope).user()
        if any(i.ttl is not None for i in items):
            await self._arefresh_items(user, [i for i in items if i.ttl is not None], now)

    def list_namespaces(
        self, scope: Scope, rules: Sequence[MatchRule], *, now: datetime
    ) -> list[Namespace]:
        """This user's namespaces holding a live item and matching every rule, sorted."""
        user = policy.require_scope(scope).user()
        return sorted(self._list_namespaces(user, _check_rules(rules), now))

    async def alist_namespaces(
        self, scope: Scope, rules: Sequence[MatchRule], *, now: datetime
    ) -> list[Namespace]:
        user = policy.require_scope(scope).user()
        return sorted(await self._alist_namespaces(user, _check_rules(rules), now))

    # -- what a backend implements (user-level scope, already checked) -------------------

    def _put_checkpoint(self, user: Scope, record: CheckpointRecord) -> None:
        raise NotImplementedError("_put_checkpoint")

    async def _aput_checkpoint(self, user: Scope, record: CheckpointRecord) -> None:
        raise NotImplementedError("_aput_checkpoint")

    def _get_checkpoints(self, user: Scope, query: CheckpointQuery) -> list[CheckpointRecord]:
        raise NotImplementedError("_get_checkpoints")

    async def _aget_checkpoints(
        self, user: Scope, query: CheckpointQuery
    ) -> list[CheckpointRecord]:
        raise NotImplementedError("_aget_checkpoints")

    def _put_checkpoint_writes(self, user: Scope, writes: list[WriteRecord], replace: bool) -> None:
        raise NotImplementedError("_put_checkpoint_writes")

    async def _aput_checkpoint_writes(
        self, user: Scope, writes: list[WriteRecord], replace: bool
    ) -> None:
        raise NotImplementedError("_aput_checkpoint_writes")

    def _delete_thread(self, user: Scope, thread_id: str) -> int:
        raise NotImplementedError("_delete_thread")

    async def _adelete_thread(self, user: Scope, thread_id: str) -> int:
        raise NotImplementedError("_adelete_thread")

    def _copy_thread(self, user: Scope, source: str, target: str) -> int:
        raise NotImplementedError("_copy_thread")

    async def _acopy_thread(self, user: Scope, source: str, target: str) -> int:
        raise NotImplementedError("_acopy_thread")

    def _prune_threads(
        self, user: Scope, thread_ids: list[str], keep_latest: bool, whole_if: Filter | None
    ) -> int:
        raise NotImplementedError("_prune_threads")

    async def _aprune_threads(
        self, user: Scope, thread_ids: list[str], keep_latest: bool, whole_if: Filter | None
    ) -> int:
        raise NotImplementedError("_aprune_threads")

    def _delete_checkpoints(self, user: Scope, query: CheckpointQuery) -> int:
        raise NotImplementedError("_delete_checkpoints")

    async def _adelete_checkpoints(self, user: Scope, query: CheckpointQuery) -> int:
        raise NotImplementedError("_adelete_checkpoints")

    def _get_items(self, user: Scope, refs: list[ItemRef], now: datetime) -> list[StoreItem]:
        raise NotImplementedError("_get_items")

    async def _aget_items(self, user: Scope, refs: list[ItemRef], now: datetime) -> list[StoreItem]:
        raise NotImplementedError("_aget_items")

    def _put_items(self, user: Scope, items: list[StoreItem], deletes: list[ItemRef]) -> None:
        raise NotImplementedError("_put_items")

    async def _aput_items(
        self, user: Scope, items: list[StoreItem], deletes: list[ItemRef]
    ) -> None:
        raise NotImplementedError("_aput_items")

    def _search_items(self, user: Scope, query: ItemQuery, now: datetime) -> list[StoreItem]:
        raise NotImplementedError("_search_items")

    async def _asearch_items(self, user: Scope, query: ItemQuery, now: datetime) -> list[StoreItem]:
        raise NotImplementedError("_asearch_items")

    def _refresh_items(self, user: Scope, items: list[StoreItem], now: datetime) -> None:
        raise NotImplementedError("_refresh_items")

    async def _arefresh_items(self, user: Scope, items: list[StoreItem], now: datetime) -> None:
        raise NotImplementedError("_arefresh_items")

    def _list_namespaces(
        self, user: Scope, rules: list[MatchRule], now: datetime
    ) -> list[Namespace]:
        raise NotImplementedError("_list_namespaces")

    async def _alist_namespaces(
        self, user: Scope, rules: list[MatchRule], now: datetime
    ) -> list[Namespace]:
        raise NotImplementedError("_alist_namespaces")


# -- stamping --------------------------------------------------------------------------------


def _stamp_checkpoint(user: Scope, record: CheckpointRecord) -> CheckpointRecord:
    policy.check_json(record.metadata, "checkpoint metadata")
    return replace(
        record,
        thread_id=_thread(record.thread_id),
        scope=policy.owner(user, record.scope),
        writes=(),
    )


def _stamp_write(user: Scope, write: WriteRecord) -> WriteRecord:
    return replace(write, thread_id=_thread(write.thread_id), scope=policy.owner(user, write.scope))


def _stamp_items(
    user: Scope, items: Sequence[StoreItem], deletes: Sequence[ItemRef]
) -> tuple[list[StoreItem], list[ItemRef]]:
    stamped = []
    now = datetime.now(timezone.utc)  # an item written without its times gets them now
    for item in items:
        policy.check_json(item.value, "a store value")
        if not isinstance(item.value, dict):
            raise InvalidInput("a store value must be a dict", field="value")
        if item.embeddings and len({len(v) for v in item.embeddings.values()}) != 1:
            raise InvalidInput(
                "an item's embeddings must all have the same dimension", field="embeddings"
            )
        stamped.append(
            replace(
                item,
                namespace=check_namespace(item.namespace),
                key=check_key(item.key),
                scope=policy.owner(user, item.scope),
                created_at=item.created_at or now,
                updated_at=item.updated_at or now,
            )
        )
    gone = [(check_namespace(ns), check_key(k)) for ns, k in deletes]
    return stamped, gone


def _check_query(query: CheckpointQuery) -> CheckpointQuery:
    """A hand-built filter tree gets the parser's checks, as ``stores.base`` does."""
    thread = None if query.thread_id is None else _thread(query.thread_id)
    return replace(query, thread_id=thread, filter=check_filter(query.filter))


def _check_items(query: ItemQuery) -> ItemQuery:
    _check_limit(query.limit, query.offset)
    prefix = check_namespace(query.prefix, empty=True)
    return replace(query, prefix=prefix, filter=check_filter(query.filter))


def _threads(thread_ids: Sequence[str]) -> list[str]:
    if isinstance(thread_ids, str):  # a lone id would be taken letter by letter
        raise InvalidInput(
            "thread_ids must be a sequence of thread ids, not one string", field="thread_ids"
        )
    return list(dict.fromkeys(_thread(t) for t in thread_ids))


def _check_delete(query: CheckpointQuery) -> CheckpointQuery:
    """A delete names a thread or a filter (never "everything of the user" by omission)."""
    if query.limit is not None:
        raise InvalidInput("a delete of checkpoints takes no limit", field="limit")
    if query.thread_id is None and query.filter is None:
        raise InvalidInput("a delete of checkpoints needs a thread_id or a filter", field="query")
    return _check_query(query)


def _check_rules(rules: Sequence[MatchRule]) -> list[MatchRule]:
    out = []
    for rule in rules:
        if rule.kind not in ("prefix", "suffix"):
            raise InvalidInput(f"unknown namespace match {rule.kind!r}", field="match")
        out.append(MatchRule(rule.kind, check_namespace(rule.path, empty=True)))
    return out
