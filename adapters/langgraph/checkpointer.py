"""A LangGraph checkpointer whose threads each belong to one (tenant, user).

    saver = MuxiCheckpointer(backend, sessions=iso.sessions)
    graph = builder.compile(checkpointer=saver)
    graph.invoke(inputs, {"configurable": {"thread_id": sid, "user_id": "tenant_a:user_1"}})

A thread is a session of its user (``thread_id`` is the session id). Another user's thread
id does not exist for you: reading, listing, writing or deleting it behaves exactly as an
unknown id, and your own thread of the same id is a different thread. ``list(None)`` lists
only the caller's checkpoints. Writing (``put``, ``put_writes``) goes through the session:
the first write creates it, each checkpoint pushes its idle expiry forward, and a thread
whose session expired raises ``SessionExpired``; pending writes check it too (they may
reach storage before their checkpoint, so they open the session as well). Reading an
expired thread still works (its history, like the session's messages, stays until purged).

Checkpoints are stored whole (``serde.dumps_typed``) with JSON metadata, like LangGraph's
SQLite saver; pending writes beside them. LangGraph's optional extensions act on the
caller's threads alone: ``copy_thread`` copies one of your threads into another of yours
(another user's thread id is a missing source, and the target is your own thread of that
id, opened like a write), ``prune`` and ``delete_for_runs`` delete only your checkpoints.
``prune(strategy="keep_latest")`` keeps the newest checkpoint of each namespace, and keeps a
namespace whole while its newest checkpoint still rebuilds a (beta) ``DeltaChannel`` from
its ancestors (its metadata counts updates since the channel's last snapshot).

``graph.get_state(config)`` and ``get_state_history`` take no ``context=``: put the
context you invoke with in the config, ``{"configurable": {"thread_id": sid}, "context":
MuxiContext(...)}``, or name the user in ``configurable["user_id"]``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from muxi_isolation import policy
from muxi_isolation.errors import InvalidInput
from muxi_isolation.filters import Filter, parse_filter
from muxi_isolation.scope import Scope
from muxi_isolation.sessions import SessionManager
from muxi_isolation.stores.base import Backend
from muxi_isolation.stores.graph import CheckpointQuery, CheckpointRecord, WriteRecord

from .._owned import OwnsBackend, Storage, unpack
from .._plans import Plan, generator_twins, step, twins
from ._scope import HINT, bound_copy, config_scopes, resolve, user_scope

__all__ = ["MuxiCheckpointer"]

_SCALARS = (str, int, float, bool)
_RUN_BATCH = 100
# LangGraph writes this metadata key while a DeltaChannel has updates since its last snapshot:
# the checkpoint's state is then rebuilt from its ancestors, which keep_latest must not drop.
_DELTA_PENDING = parse_filter({"counters_since_delta_snapshot": {"$exists": True}})


class MuxiCheckpointer(OwnsBackend, BaseCheckpointSaver[str]):
    """Checkpoints per (tenant, user) on any backend; sync and async.

    ``sessions`` carries the session timeout from config (``Isolation.sessions``); by
    default a ``SessionManager`` with the default timeout. ``scope`` binds the saver to one
    user (see ``for_user``); otherwise each call finds its user in the config, the agent's
    runtime context or ``use_scope()`` (see ``_scope``). An ``Isolation`` in place of the
    backend brings its sessions; ``with MuxiCheckpointer.from_url(url) as saver:`` (or
    ``async with``) opens and closes storage of its own, like ``PostgresSaver``.
    """

    def __init__(
        self,
        backend: Storage,
        *,
        sessions: SessionManager | None = None,
        scope: Scope | None = None,
        serde: SerializerProtocol | None = None,
        create_sessions: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        self.backend, self.sessions = unpack(backend, sessions)
        self.scope = user_scope(scope)
        self.create_sessions = create_sessions  # False: a thread must be an existing session

    def for_user(self, scope: Scope) -> MuxiCheckpointer:
        """The same saver bound to one user: every call acts for it alone."""
        return bound_copy(self, scope)

    def _storage_backend(self) -> Backend:
        return self.backend

    # -- shared logic ----------------------------------------------------------------------

    def _user(self, config: RunnableConfig | None) -> Scope:
        # The thread is a session of the user: every source naming a session must name it.
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        session = None if thread is None else str(thread)
        return resolve(self.scope, *config_scopes(config), session=session, hint=HINT).user()

    def _writable(self, user: Scope, thread: str) -> Plan[object]:
        """Writes may race ahead of their checkpoint (LangGraph's async durability): open the
        session if this user has none (unless ``create_sessions=False``: then
        ``SessionNotFound``); an expired one raises ``SessionExpired``."""
        s = self.sessions
        if self.create_sessions:
            return (yield from step(s.ensure, s.aensure, user, thread))
        return (yield from step(s.touch, s.atouch, user, thread))

    @staticmethod
    def _where(config: RunnableConfig) -> tuple[str, str]:
        configurable = config["configurable"]
        return str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))

    def _record(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> CheckpointRecord:
        thread, ns = self._where(config)
        kind, blob = self.serde.dumps_typed(checkpoint)
        parent = config["configurable"].get("checkpoint_id")
        meta = dict(get_serializable_checkpoint_metadata(config, metadata))
        return CheckpointRecord(thread, ns, checkpoint["id"], parent, kind, blob, meta)

    @staticmethod
    def _config(record: CheckpointRecord, checkpoint_id: str | None = None) -> RunnableConfig:
        """The config naming a checkpoint, with its owner (so it can be used as is)."""
        assert record.scope is not None
        return {
            "configurable": {
                "thread_id": record.thread_id,
                "checkpoint_ns": record.checkpoint_ns,
                "checkpoint_id": checkpoint_id or record.checkpoint_id,
                "user_id": record.scope.header,
            }
        }

    def _tuple(self, record: CheckpointRecord) -> CheckpointTuple:
        parent = self._config(record, record.parent_id) if record.parent_id else None
        return CheckpointTuple(
            config=self._config(record),
            checkpoint=self.serde.loads_typed((record.type, record.checkpoint)),
            metadata=record.metadata,  # type: ignore[arg-type]
            parent_config=parent,
            pending_writes=[
                (w.task_id, w.channel, self.serde.loads_typed((w.type, w.value)))
                for w in record.writes
            ],
        )

    def _writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, path: str
    ) -> tuple[list[WriteRecord], list[WriteRecord]]:
        """(special writes, which replace; regular ones, which never overwrite)."""
        thread, ns = self._where(config)
        checkpoint_id = str(config["configurable"]["checkpoint_id"])
        special: list[WriteRecord] = []
        regular: list[WriteRecord] = []
        for idx, (channel, value) in enumerate(writes):
            kind, blob = self.serde.dumps_typed(value)
            index = WRITES_IDX_MAP.get(channel, idx)
            record = WriteRecord(
                thread, ns, checkpoint_id, task_id, index, channel, kind, blob, path
            )
            (special if index < 0 else regular).append(record)
        return special, regular

    @staticmethod
    def _query_one(config: RunnableConfig) -> CheckpointQuery:
        thread, ns = MuxiCheckpointer._where(config)
        return CheckpointQuery(thread, ns, get_checkpoint_id(config), limit=1)

    @staticmethod
    def _query(
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> tuple[CheckpointQuery, dict[str, Any]]:
        """The storage query, and the filter parts checked here (non-scalar values)."""
        if limit is not None:  # also when the limit is applied here, not by the storage
            policy.check_int(limit, "limit", minimum=0)
        configurable = (config or {}).get("configurable") or {}
        thread = configurable.get("thread_id")
        ns = configurable.get("checkpoint_ns")
        in_sql = {k: v for k, v in (filter or {}).items() if _sql_filterable(k, v)}
        here = {k: v for k, v in (filter or {}).items() if k not in in_sql}
        node: Filter | None = parse_filter(in_sql) if in_sql else None
        query = CheckpointQuery(
            thread_id=None if thread is None else str(thread),
            checkpoint_ns=None if ns is None else str(ns),
            checkpoint_id=get_checkpoint_id(config) if config else None,
            before=get_checkpoint_id(before) if before else None,
            filter=node,
            limit=None if here else limit,
        )
        return query, here

    def _listed(
        self, records: list[CheckpointRecord], here: dict[str, Any], limit: int | None
    ) -> list[CheckpointTuple]:
        if here:
            records = [r for r in records if all(r.metadata.get(k) == v for k, v in here.items())]
            records = records if limit is None else records[:limit]
        return [self._tuple(r) for r in records]

    # -- the operations, each one plan for both halves -------------------------------------

    def _get_tuple(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        b, user = self.backend, self._user(config)
        query = self._query_one(config)
        found = yield from step(b.get_checkpoints, b.aget_checkpoints, user, query)
        return self._tuple(found[0]) if found else None

    get_tuple, aget_tuple = twins(_get_tuple)

    def _listing(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Plan[list[CheckpointTuple]]:
        query, here = self._query(config, filter, before, limit)
        b = self.backend
        records = yield from step(b.get_checkpoints, b.aget_checkpoints, self._user(config), query)
        return self._listed(records, here, limit)

    # LangGraph's list/alist are (async) generators: the plan answers the whole list.
    list, alist = generator_twins(_listing, "list", "alist")

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Plan[RunnableConfig]:
        user = self._user(config)
        record = self._record(config, checkpoint, metadata)
        yield from self._writable(user, record.thread_id)
        b = self.backend
        yield from step(b.put_checkpoint, b.aput_checkpoint, user, record)
        return self._config(replace(record, scope=user))

    put, aput = twins(_put)

    def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Plan[None]:
        user = self._user(config)
        special, regular = self._writes(config, writes, task_id, task_path)
        yield from self._writable(user, self._where(config)[0])
        b = self.backend
        for batch, overwrite in ((special, True), (regular, False)):
            if batch:
                put, aput = b.put_checkpoint_writes, b.aput_checkpoint_writes
                yield from step(put, aput, user, batch, replace=overwrite)

    put_writes, aput_writes = twins(_put_writes)

    def _delete_thread(self, thread_id: str) -> Plan[None]:
        b = self.backend
        yield from step(b.delete_thread, b.adelete_thread, self._user(None), str(thread_id))

    delete_thread, adelete_thread = twins(_delete_thread)

    def _copy_thread(self, source_thread_id: str, target_thread_id: str) -> Plan[None]:
        user = self._user(None)
        source, target = str(source_thread_id), str(target_thread_id)
        b = self.backend
        query = CheckpointQuery(source, limit=1)
        if (yield from step(b.get_checkpoints, b.aget_checkpoints, user, query)):
            yield from self._writable(user, target)  # the copy is a write to the target
            yield from step(b.copy_thread, b.acopy_thread, user, source, target)

    copy_thread, acopy_thread = twins(_copy_thread)

    def _prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> Plan[None]:
        keep = _keep_latest(strategy)
        b = self.backend
        yield from step(
            b.prune_threads,
            b.aprune_threads,
            self._user(None),
            _ids(thread_ids, "thread_ids"),
            keep_latest=keep,
            whole_if=_DELTA_PENDING,
        )

    prune, aprune = twins(_prune)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Plan[None]:
        user = self._user(None)
        b = self.backend
        for query in _run_queries(run_ids):
            yield from step(b.delete_checkpoints, b.adelete_checkpoints, user, query)

    delete_for_runs, adelete_for_runs = twins(_delete_for_runs)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Like LangGraph's own savers: a zero-padded counter and a random tiebreak."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"  # noqa: S311 - not a secret


def _sql_filterable(key: str, value: Any) -> bool:
    """Scalar equality on a plain key is compiled into the storage query."""
    return isinstance(key, str) and not key.startswith("$") and isinstance(value, _SCALARS)


def _keep_latest(strategy: str) -> bool:
    if strategy not in ("keep_latest", "delete"):
        raise InvalidInput(
            f"unknown prune strategy {strategy!r}: 'keep_latest' or 'delete'", field="strategy"
        )
    return strategy == "keep_latest"


def _ids(ids: Sequence[str], name: str) -> list[str]:
    if isinstance(ids, str):  # one id, not a sequence of its letters
        raise InvalidInput(f"{name}: expected a sequence of ids, not one string", field=name)
    return [str(i) for i in ids]


def _run_queries(run_ids: Sequence[str]) -> Iterator[CheckpointQuery]:
    """The user's checkpoints whose metadata names one of the runs, a batch at a time."""
    ids = _ids(run_ids, "run_ids")
    for i in range(0, len(ids), _RUN_BATCH):
        node = parse_filter({"run_id": {"$in": ids[i : i + _RUN_BATCH]}})
        yield CheckpointQuery(filter=node)
