"""Graph storage for ``MemoryBackend``: dicts per (tenant, user), under the backend's lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from ..filters import Filter, matches
from ..scope import Scope
from . import graph
from ._graph_operations import GraphMethods
from .base import Counts

__all__ = ["MemoryGraph"]

UserKey = tuple[str, str]
CheckpointKey = tuple[str, str, str]  # thread, namespace, checkpoint id
WriteKey = tuple[str, str, str, str, int]  # ... task id, idx


def _live(item: graph.StoreItem, now: datetime) -> bool:
    return item.expires_at is None or item.expires_at > now


def _newest_first(item: graph.StoreItem) -> tuple[float, graph.Namespace, str]:
    stamp = item.updated_at or datetime.min.replace(tzinfo=timezone.utc)
    return (-stamp.timestamp(), item.namespace, item.key)


class MemoryGraph(GraphMethods):
    """The graph half of ``MemoryBackend``; its dicts are made on first use."""

    _lock: threading.RLock
    _graph_data: tuple[
        dict[UserKey, dict[CheckpointKey, graph.CheckpointRecord]],
        dict[UserKey, dict[WriteKey, graph.WriteRecord]],
        dict[UserKey, dict[graph.ItemRef, graph.StoreItem]],
    ]

    def _graph(
        self,
    ) -> tuple[
        dict[UserKey, dict[CheckpointKey, graph.CheckpointRecord]],
        dict[UserKey, dict[WriteKey, graph.WriteRecord]],
        dict[UserKey, dict[graph.ItemRef, graph.StoreItem]],
    ]:
        with self._lock:
            if not hasattr(self, "_graph_data"):
                self._graph_data = ({}, {}, {})
            return self._graph_data

    @staticmethod
    def _key(user: Scope) -> UserKey:
        return (user.tenant_id, user.user_id)

    # -- checkpoints

    def _put_checkpoint(self, user: Scope, record: graph.CheckpointRecord) -> None:
        checkpoints, _, _ = self._graph()
        key = (record.thread_id, record.checkpoint_ns, record.checkpoint_id)
        with self._lock:
            bucket = checkpoints.setdefault(self._key(user), {})
            old = bucket.get(key)
            created = old.created_at if old else record.created_at
            bucket[key] = replace(record, created_at=created or datetime.now(timezone.utc))

    def _get_checkpoints(
        self, user: Scope, query: graph.CheckpointQuery
    ) -> list[graph.CheckpointRecord]:
        checkpoints, writes, _ = self._graph()
        with self._lock:
            rows = list(checkpoints.get(self._key(user), {}).values())
            mine = list(writes.get(self._key(user), {}).values())
        rows = [r for r in rows if _wanted(r, query)]
        rows.sort(key=lambda r: (r.checkpoint_id, r.thread_id, r.checkpoint_ns), reverse=True)
        if query.limit is not None:
            rows = rows[: query.limit]
        out = []
        for r in rows:
            own = [
                w
                for w in mine
                if (w.thread_id, w.checkpoint_ns, w.checkpoint_id)
                == (r.thread_id, r.checkpoint_ns, r.checkpoint_id)
            ]
            own.sort(key=lambda w: (w.task_path, w.task_id, w.idx))
            out.append(replace(r, writes=tuple(own)))
        return out

    def _put_checkpoint_writes(
        self, user: Scope, writes: list[graph.WriteRecord], replace: bool
    ) -> None:
        _, stored, _ = self._graph()
        with self._lock:
            bucket = stored.setdefault(self._key(user), {})
            for w in writes:
                key = (w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx)
                if replace or key not in bucket:
                    bucket[key] = w

    def _delete_thread(self, user: Scope, thread_id: str) -> int:
        checkpoints, writes, _ = self._graph()
        with self._lock:
            _drop_thread(writes, self._key(user), thread_id)
            return _drop_thread(checkpoints, self._key(user), thread_id)

    def _copy_thread(self, user: Scope, source: str, target: str) -> int:
        checkpoints, writes, _ = self._graph()
        with self._lock:
            mine = checkpoints.get(self._key(user), {})
            copied = {
                (target, *k[1:]): replace(r, thread_id=target)
                for k, r in mine.items()
                if k[0] == source
            }
            if not copied:
                return 0
            mine.update(copied)
            own = writes.setdefault(self._key(user), {})
            own.update(
                {
                    (target, *k[1:]): replace(w, thread_id=target)
                    for k, w in own.items()
                    if k[0] == source
                }
            )
            return len(copied)

    def _prune_threads(
        self, user: Scope, thread_ids: list[str], keep_latest: bool, whole_if: Filter | None
    ) -> int:
        checkpoints, writes, _ = self._graph()
        wanted = set(thread_ids)
        with self._lock:
            mine = checkpoints.get(self._key(user), {})
            newest: dict[tuple[str, str], graph.CheckpointRecord] = {}
            for (thread, ns, cid), record in mine.items():
                latest = newest.get((thread, ns))
                if thread in wanted and (latest is None or cid > latest.checkpoint_id):
                    newest[(thread, ns)] = record

            def doomed(key: tuple[Any, ...]) -> bool:
                if key[0] not in wanted:
                    return False
                if not keep_latest:
                    return True
                latest = newest.get((key[0], key[1]))
                if latest is None or (whole_if is not None and matches(whole_if, latest.metadata)):
                    return False
                return bool(key[2] < latest.checkpoint_id)

            _drop(writes, self._key(user), doomed)
            return _drop(checkpoints, self._key(user), doomed)

    def _delete_checkpoints(self, user: Scope, query: graph.CheckpointQuery) -> int:
        checkpoints, writes, _ = self._graph()
        with self._lock:
            gone = {k for k, r in checkpoints.get(self._key(user), {}).items() if _wanted(r, query)}
            _drop(writes, self._key(user), lambda k: k[:3] in gone)
            return _drop(checkpoints, self._key(user), lambda k: k in gone)

    # -- store items

    def _get_items(
        self, user: Scope, refs: list[graph.ItemRef], now: datetime
    ) -> list[graph.StoreItem]:
        _, _, items = self._graph()
        with self._lock:
            bucket = items.get(self._key(user), {})
            found = [bucket.get(ref) for ref in dict.fromkeys(refs)]
        return [i for i in found if i is not None and _live(i, now)]

    def _put_items(
        self, user: Scope, new: list[graph.StoreItem], deletes: list[graph.ItemRef]
    ) -> None:
        _, _, items = self._graph()
        with self._lock:
            bucket = items.setdefault(self._key(user), {})
            for ref in deletes:
                bucket.pop(ref, None)
            for item in new:
                old = bucket.get((item.namespace, item.key))
                created = old.created_at if old is not None else item.created_at
                bucket[(item.namespace, item.key)] = replace(item, created_at=created)

    def _search_items(
        self, user: Scope, query: graph.ItemQuery, now: datetime
    ) -> list[graph.StoreItem]:
        _, _, items = self._graph()
        rule = graph.MatchRule("prefix", query.prefix)
        with self._lock:
            rows = list(items.get(self._key(user), {}).values())
        rows = [
            i
            for i in rows
            if _live(i, now)
            and _exact_prefix(i.namespace, rule.path)
            and matches(query.filter, i.value)
        ]
        rows.sort(key=_newest_first)
        if query.vectors:
            return rows
        end = None if query.limit is None else query.offset + query.limit
        return rows[query.offset : end]

    def _refresh_items(self, user: Scope, refreshed: list[graph.StoreItem], now: datetime) -> None:
        _, _, items = self._graph()
        with self._lock:
            bucket = items.get(self._key(user), {})
            for item in refreshed:
                ref = (item.namespace, item.key)
                stored = bucket.get(ref)
                if stored is not None and stored.ttl is not None:
                    bucket[ref] = replace(stored, expires_at=graph.expiry(now, stored.ttl))

    def _list_namespaces(
        self, user: Scope, rules: list[graph.MatchRule], now: datetime
    ) -> list[graph.Namespace]:
        _, _, items = self._graph()
        with self._lock:
            rows = list(items.get(self._key(user), {}).values())
        found = {i.namespace for i in rows if _live(i, now)}
        return [ns for ns in found if all(graph.namespace_matches(ns, r) for r in rules)]

    def _forget_graph(self, user: Scope) -> Counts:
        """Drop the user's graph data; counts only for the kinds the user had."""
        checkpoints, writes, items = self._graph()
        key = self._key(user)
        with self._lock:
            counts = {
                "checkpoints": len(checkpoints.pop(key, {})),
                "checkpoint_writes": len(writes.pop(key, {})),
                "store_items": len(items.pop(key, {})),
            }
        return {kind: n for kind, n in counts.items() if n}

    def _forget_graph_tenant(self, tenant_id: str) -> Counts:
        """Drop a tenant's graph data (admin path); counts only for the kinds it had."""
        counts = {"checkpoints": 0, "checkpoint_writes": 0, "store_items": 0}
        every: tuple[dict[UserKey, dict[Any, Any]], ...] = self._graph()
        with self._lock:
            for kind, data in zip(counts, every, strict=True):
                for key in [k for k in data if k[0] == tenant_id]:
                    counts[kind] += len(data.pop(key))
        return {kind: n for kind, n in counts.items() if n}

    def _forget_graph_threads(self, tenant_id: str, threads: list[tuple[str, str]]) -> Counts:
        """Drop the checkpoints and writes of these (user, session) pairs of a tenant."""
        checkpoints, writes, _ = self._graph()
        counts = {"checkpoints": 0, "checkpoint_writes": 0}
        with self._lock:
            for user_id, sid in threads:
                user = Scope(tenant_id, user_id)
                counts["checkpoint_writes"] += _drop_thread(writes, self._key(user), sid)
                counts["checkpoints"] += _drop_thread(checkpoints, self._key(user), sid)
        return {kind: n for kind, n in counts.items() if n}

    def _graph_tenants(self) -> set[str]:
        with self._lock:
            return {k[0] for data in self._graph() for k, rows in data.items() if rows}


def _drop_thread(data: dict[UserKey, dict[Any, Any]], key: UserKey, thread_id: str) -> int:
    return _drop(data, key, lambda k: k[0] == thread_id)


def _drop(data: dict[UserKey, dict[Any, Any]], key: UserKey, doomed: Callable[[Any], bool]) -> int:
    """Remove the user's entries whose key is doomed; how many went."""
    bucket = data.get(key, {})
    gone = [k for k in bucket if doomed(k)]
    for k in gone:
        del bucket[k]
    return len(gone)


def _exact_prefix(namespace: graph.Namespace, prefix: graph.Namespace) -> bool:
    """A search prefix is literal: unlike a listing rule, ``*`` here is just a label."""
    return namespace[: len(prefix)] == prefix


def _wanted(r: graph.CheckpointRecord, q: graph.CheckpointQuery) -> bool:
    return (
        (q.thread_id is None or r.thread_id == q.thread_id)
        and (q.checkpoint_ns is None or r.checkpoint_ns == q.checkpoint_ns)
        and (q.checkpoint_id is None or r.checkpoint_id == q.checkpoint_id)
        and (q.before is None or r.checkpoint_id < q.before)
        and matches(q.filter, r.metadata)
    )
