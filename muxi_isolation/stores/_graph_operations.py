"""Agent-graph operations (checkpoints and store items): one user's, declared once.

Each is an ``operations.Operation`` read at the user level: made by its ``prepare``, it has
failed closed on a missing scope, checked its input and stamped its writes; its ``plan``
verifies what comes back. ``GraphMethods``, mixed into ``Backend``, holds the public pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from .. import policy
from .._input import check_int
from ..errors import InvalidInput
from ..filters import Filter, check_filter
from ..scope import Scope, canonical_id
from .graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    ItemRef,
    MatchRule,
    Namespace,
    StoreItem,
    WriteRecord,
    check_key,
    check_namespace,
)
from .operations import Context, Plan, R, UserOperation, Verified, methods, perform

__all__ = ["GraphMethods", "GraphOperation"]


def _verify_checkpoints(user: Scope, records: Iterable[CheckpointRecord]) -> list[CheckpointRecord]:
    kept = policy.verify(user, records)
    return [replace(r, writes=tuple(policy.verify(user, r.writes))) for r in kept]


def _check_limit(limit: int | None, offset: int = 0) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None:
            check_int(value, name, minimum=0)  # 64 bits: what SQLite and PostgreSQL bind


def _thread(thread_id: str) -> str:
    return canonical_id(thread_id, "thread_id")


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


@dataclass(frozen=True)
class GraphOperation(UserOperation[R]):
    """An operation on one user's checkpoints or store items."""


@dataclass(frozen=True)
class PutCheckpoint(GraphOperation[None]):
    """Insert or replace the checkpoint (thread, namespace, id) of this user."""

    name = "put_checkpoint"
    write = True
    record: CheckpointRecord

    @classmethod
    def prepare(cls, scope: Scope, record: CheckpointRecord) -> PutCheckpoint:
        user = cls.owner(scope)
        return cls(user, _stamp_checkpoint(user, record))


@dataclass(frozen=True)
class GetCheckpoints(GraphOperation[list[CheckpointRecord]]):
    """This user's matching checkpoints, newest id first, each with its pending writes."""

    name = "get_checkpoints"
    query: CheckpointQuery

    @classmethod
    def prepare(cls, scope: Scope, query: CheckpointQuery) -> GetCheckpoints:
        user = cls.owner(scope)
        _check_limit(query.limit)
        return cls(user, _check_query(query))

    def plan(self, backend: Context) -> Plan[list[CheckpointRecord]]:
        return _verify_checkpoints(self.scope, (yield from perform(backend, self)))


@dataclass(frozen=True)
class PutCheckpointWrites(GraphOperation[None]):
    """Store writes; ``replace=False`` keeps a write already stored under its key."""

    name = "put_checkpoint_writes"
    write = True
    writes: list[WriteRecord]
    replace: bool

    @classmethod
    def prepare(
        cls, scope: Scope, writes: Sequence[WriteRecord], *, replace: bool
    ) -> PutCheckpointWrites:
        user = cls.owner(scope)
        return cls(user, [_stamp_write(user, w) for w in writes], replace)

    def plan(self, backend: Context) -> Plan[None]:
        if self.writes:
            yield from perform(backend, self)


@dataclass(frozen=True)
class DeleteThread(GraphOperation[int]):
    """Delete this user's checkpoints and writes of the thread; returns checkpoints gone."""

    name = "delete_thread"
    write = True
    audit_ids = "thread_id"
    thread_id: str

    @classmethod
    def prepare(cls, scope: Scope, thread_id: str) -> DeleteThread:
        return cls(cls.owner(scope), _thread(thread_id))


@dataclass(frozen=True)
class CopyThread(GraphOperation[int]):
    """Copy this user's checkpoints and writes of one thread into another of the same
    user (replacing any of the same id there); returns checkpoints copied. Another
    user's thread is no source: it copies nothing."""

    name = "copy_thread"
    write = True
    audit_ids = "source_thread_id"
    source: str
    target: str

    @classmethod
    def prepare(cls, scope: Scope, source_thread_id: str, target_thread_id: str) -> CopyThread:
        user = cls.owner(scope)
        return cls(user, _thread(source_thread_id), _thread(target_thread_id))

    def plan(self, backend: Context) -> Plan[int]:
        if self.source == self.target:
            return 0
        copied: int = yield from perform(backend, self)
        return copied


@dataclass(frozen=True)
class PruneThreads(GraphOperation[int]):
    """Delete this user's checkpoints of these threads (and their writes): all of them, or
    all but the newest of each namespace, except that a namespace whose newest checkpoint's
    metadata matches ``whole_if`` is kept whole. Returns checkpoints gone."""

    name = "prune_threads"
    write = True
    thread_ids: list[str]
    keep_latest: bool
    whole_if: Filter | None

    @classmethod
    def prepare(
        cls,
        scope: Scope,
        thread_ids: Sequence[str],
        *,
        keep_latest: bool,
        whole_if: Filter | None = None,
    ) -> PruneThreads:
        user = cls.owner(scope)
        return cls(user, _threads(thread_ids), keep_latest, check_filter(whole_if))

    def plan(self, backend: Context) -> Plan[int]:
        if not self.thread_ids:
            return 0
        gone: int = yield from perform(backend, self)
        return gone


@dataclass(frozen=True)
class DeleteCheckpoints(GraphOperation[int]):
    """Delete this user's checkpoints matching ``query`` (and their writes); returns
    checkpoints gone. The query names a thread or a filter, and has no limit."""

    name = "delete_checkpoints"
    write = True
    query: CheckpointQuery

    @classmethod
    def prepare(cls, scope: Scope, query: CheckpointQuery) -> DeleteCheckpoints:
        user = cls.owner(scope)
        return cls(user, _check_delete(query))


@dataclass(frozen=True)
class GetItems(GraphOperation[list[StoreItem]], Verified[StoreItem]):
    """This user's items among ``refs`` that have not expired by ``now``."""

    name = "get_items"
    refs: list[ItemRef]
    now: datetime

    @classmethod
    def prepare(cls, scope: Scope, refs: Sequence[ItemRef], *, now: datetime) -> GetItems:
        user = cls.owner(scope)
        return cls(user, [(check_namespace(ns), check_key(k)) for ns, k in refs], now)

    def plan(self, backend: Context) -> Plan[list[StoreItem]]:
        if not self.refs:
            return []
        return (yield from super().plan(backend))


@dataclass(frozen=True)
class PutItems(GraphOperation[None]):
    """Upsert ``items`` (creation time kept) and delete ``deletes``, in one transaction."""

    name = "put_items"
    write = True
    items: list[StoreItem]
    deletes: list[ItemRef]

    @classmethod
    def prepare(
        cls, scope: Scope, items: Sequence[StoreItem], deletes: Sequence[ItemRef]
    ) -> PutItems:
        user = cls.owner(scope)
        return cls(user, *_stamp_items(user, items, deletes))

    def plan(self, backend: Context) -> Plan[None]:
        if self.items or self.deletes:
            yield from perform(backend, self)


@dataclass(frozen=True)
class SearchItems(GraphOperation[list[StoreItem]], Verified[StoreItem]):
    """This user's items under the query's namespace prefix, matching its filter (ranked
    by similarity when it has an embedding), that have not expired by ``now``."""

    name = "search_items"
    query: ItemQuery
    now: datetime

    @classmethod
    def prepare(cls, scope: Scope, query: ItemQuery, *, now: datetime) -> SearchItems:
        user = cls.owner(scope)
        return cls(user, _check_items(query), now)


@dataclass(frozen=True)
class RefreshItems(GraphOperation[None]):
    """Push the TTL of these items of this user forward from ``now``."""

    name = "refresh_items"
    write = True
    items: list[StoreItem]
    now: datetime

    @classmethod
    def prepare(cls, scope: Scope, items: Sequence[StoreItem], *, now: datetime) -> RefreshItems:
        user = cls.owner(scope)
        return cls(user, [i for i in items if i.ttl is not None], now)

    def plan(self, backend: Context) -> Plan[None]:
        if self.items:
            yield from perform(backend, self)


@dataclass(frozen=True)
class ListNamespaces(GraphOperation[list[Namespace]]):
    """This user's namespaces holding a live item and matching every rule, sorted."""

    name = "list_namespaces"
    rules: list[MatchRule]
    now: datetime

    @classmethod
    def prepare(cls, scope: Scope, rules: Sequence[MatchRule], *, now: datetime) -> ListNamespaces:
        user = cls.owner(scope)
        return cls(user, _check_rules(rules), now)

    def plan(self, backend: Context) -> Plan[list[Namespace]]:
        return sorted((yield from perform(backend, self)))


class GraphMethods:
    """Checkpoints and store items of one (tenant, user). Mixed into ``Backend``."""

    # -- checkpoints
    put_checkpoint, aput_checkpoint = methods(PutCheckpoint.prepare)
    get_checkpoints, aget_checkpoints = methods(GetCheckpoints.prepare)
    put_checkpoint_writes, aput_checkpoint_writes = methods(PutCheckpointWrites.prepare)
    delete_thread, adelete_thread = methods(DeleteThread.prepare)
    copy_thread, acopy_thread = methods(CopyThread.prepare)
    prune_threads, aprune_threads = methods(PruneThreads.prepare)
    delete_checkpoints, adelete_checkpoints = methods(DeleteCheckpoints.prepare)

    # -- store items
    get_items, aget_items = methods(GetItems.prepare)
    put_items, aput_items = methods(PutItems.prepare)
    search_items, asearch_items = methods(SearchItems.prepare)
    refresh_items, arefresh_items = methods(RefreshItems.prepare)
    list_namespaces, alist_namespaces = methods(ListNamespaces.prepare)
