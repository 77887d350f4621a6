"""Agent-graph storage on SQL: the operations (written once, on a sync ``Connection``) and
the ``SQLGraph`` half of ``SQLBackend`` that runs each in one scoped transaction.

Every statement names ``tenant_id`` and ``user_id`` by equality (a Citus router query, and
the row-level-security policies check the same). Namespace rules compare single labels by
equality with bound values: ``json_extract(namespace, '$[i]')`` on SQLite, ``namespace::jsonb
->> i`` on PostgreSQL (negative ``i`` counts from the end). Never ``LIKE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from ...filters import Filter
from ...scope import Scope
from .. import graph
from ._filters import compile_filter
from ._graph_rows import (
    chunks,
    pack,
    row_to_checkpoint,
    row_to_item,
    row_to_write,
    with_writes,
)
from ._graph_schema import GraphTables
from ._ops_base import utc_now

if TYPE_CHECKING:
    from ._schema import Tables

__all__ = ["GraphOps", "SQLGraph"]

Cond = ColumnElement[bool]
T = TypeVar("T")

# What an upsert replaces when the row's key is already stored (the rest is key, or kept).
_CHECKPOINT_CHANGES = ("parent_checkpoint_id", "type", "checkpoint", "metadata")
_WRITE_CHANGES = ("channel", "type", "value", "task_path")
_ITEM_CHANGES = (
    "value",
    "updated_at",
    "expires_at",
    "ttl_minutes",
    "embedding_fields",
    "embeddings",
)


class GraphOps:
    """Checkpoints, pending writes and store items on one connection."""

    def __init__(self, tables: GraphTables, dialect: str) -> None:
        self.g = tables
        self.dialect = dialect

    @staticmethod
    def _user(table: Table, user: Scope) -> list[Cond]:
        return [table.c.tenant_id == user.tenant_id, table.c.user_id == user.user_id]

    @staticmethod
    def _owner(user: Scope) -> dict[str, Any]:
        """The columns that make a new row this user's (what ``_user`` then matches)."""
        return {"tenant_id": user.tenant_id, "user_id": user.user_id}

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _upsert(self, table: Table, changing: tuple[str, ...], rows: Any = None) -> Any:
        """Insert into ``table`` (with ``rows``: what that select gives), ``changing``
        replaced where the key is already stored."""
        stmt = self._insert(table)
        if rows is not None:
            stmt = stmt.from_select([c.name for c in table.columns], rows)
        return stmt.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={name: stmt.excluded[name] for name in changing},
        )

    # -- checkpoints

    def put_checkpoint(self, conn: Connection, user: Scope, record: graph.CheckpointRecord) -> None:
        row = {
            **self._owner(user),
            "session_id": record.thread_id,
            "checkpoint_ns": record.checkpoint_ns,
            "checkpoint_id": record.checkpoint_id,
            "parent_checkpoint_id": record.parent_id,
            "type": record.type,
            "checkpoint": record.checkpoint,
            "metadata": record.metadata,
            "created_at": record.created_at or utc_now(),
        }
        conn.execute(self._upsert(self.g.checkpoints, _CHECKPOINT_CHANGES), row)

    def _matching(self, user: Scope, q: graph.CheckpointQuery) -> list[Cond]:
        t = self.g.checkpoints
        where = self._user(t, user)
        if q.thread_id is not None:
            where.append(t.c.session_id == q.thread_id)
        if q.checkpoint_ns is not None:
            where.append(t.c.checkpoint_ns == q.checkpoint_ns)
        if q.checkpoint_id is not None:
            where.append(t.c.checkpoint_id == q.checkpoint_id)
        if q.before is not None:
            where.append(t.c.checkpoint_id < q.before)
        if q.filter is not None:
            where.append(compile_filter(q.filter, t.c["metadata"], self.dialect))
        return where

    def get_checkpoints(
        self, conn: Connection, user: Scope, q: graph.CheckpointQuery
    ) -> list[graph.CheckpointRecord]:
        t = self.g.checkpoints
        query = (
            select(t)
            .where(*self._matching(user, q))
            .order_by(t.c.checkpoint_id.desc(), t.c.session_id.desc(), t.c.checkpoint_ns.desc())
            .limit(q.limit)
        )
        found = [row_to_checkpoint(row) for row in conn.execute(query)]
        if not found:
            return []
        writes = self._writes(
            conn, user, [(r.thread_id, r.checkpoint_ns, r.checkpoint_id) for r in found]
        )
        return [
            with_writes(r, writes.get((r.thread_id, r.checkpoint_ns, r.checkpoint_id), []))
            for r in found
        ]

    def _writes(
        self, conn: Connection, user: Scope, keys: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], list[graph.WriteRecord]]:
        w = self.g.writes
        out: dict[tuple[str, str, str], list[graph.WriteRecord]] = {}
        for chunk in chunks(keys):
            rows = conn.execute(
                select(w)
                .where(
                    *self._user(w, user),
                    tuple_(w.c.session_id, w.c.checkpoint_ns, w.c.checkpoint_id).in_(chunk),
                )
                .order_by(w.c.task_path, w.c.task_id, w.c.idx)
            )
            for row in rows:
                write = row_to_write(row)
                out.setdefault(
                    (write.thread_id, write.checkpoint_ns, write.checkpoint_id), []
                ).append(write)
        return out

    def put_checkpoint_writes(
        self, conn: Connection, user: Scope, writes: list[graph.WriteRecord], replace: bool
    ) -> None:
        w = self.g.writes
        rows = [
            {
                **self._owner(user),
                "session_id": x.thread_id,
                "checkpoint_ns": x.checkpoint_ns,
                "checkpoint_id": x.checkpoint_id,
                "task_id": x.task_id,
                "idx": x.idx,
                "channel": x.channel,
                "type": x.type,
                "value": x.value,
                "task_path": x.task_path,
            }
            for x in writes
        ]
        if replace:
            stmt = self._upsert(w, _WRITE_CHANGES)
        else:
            stmt = self._insert(w).on_conflict_do_nothing(
                index_elements=list(w.primary_key.columns)
            )
        conn.execute(stmt, rows)

    def delete_thread(self, conn: Connection, user: Scope, thread_id: str) -> int:
        w, t = self.g.writes, self.g.checkpoints
        conn.execute(delete(w).where(*self._user(w, user), w.c.session_id == thread_id))
        gone = conn.execute(delete(t).where(*self._user(t, user), t.c.session_id == thread_id))
        return int(gone.rowcount)

    def copy_thread(self, conn: Connection, user: Scope, source: str, target: str) -> int:
        """INSERT ... SELECT within the user's rows: both sides name (tenant, user)."""
        for table, changing in (
            (self.g.checkpoints, _CHECKPOINT_CHANGES),
            (self.g.writes, _WRITE_CHANGES),
        ):
            mine = [*self._user(table, user), table.c.session_id == source]
            columns = [
                bindparam(None, target, type_=c.type) if c.name == "session_id" else c
                for c in table.columns
            ]
            conn.execute(self._upsert(table, changing, select(*columns).where(*mine)))
        t = self.g.checkpoints  # PostgreSQL gives no rowcount for INSERT ... SELECT
        count = select(func.count()).where(*self._user(t, user), t.c.session_id == source)
        return int(conn.execute(count).scalar_one())

    def prune_threads(
        self,
        conn: Connection,
        user: Scope,
        thread_ids: list[str],
        keep_latest: bool,
        whole_if: Filter | None,
    ) -> int:
        gone = 0
        for chunk in chunks(thread_ids):
            for table in (self.g.writes, self.g.checkpoints):  # writes go with checkpoints
                where = [*self._user(table, user), table.c.session_id.in_(chunk)]
                if keep_latest:
                    where.append(table.c.checkpoint_id < self._newest(table))
                if keep_latest and whole_if is not None:
                    where.append(~self._kept_whole(table, whole_if))
                done = conn.execute(delete(table).where(*where))
            gone += int(done.rowcount)  # the checkpoints'
        return gone

    def _kept_whole(self, table: Table, whole_if: Filter) -> Cond:
        """The newest checkpoint of the row's (user, thread, namespace) matches ``whole_if``."""
        head = self.g.checkpoints.alias("head")
        return exists(
            select(1)
            .select_from(head)
            .where(
                head.c.tenant_id == table.c.tenant_id,
                head.c.user_id == table.c.user_id,
                head.c.session_id == table.c.session_id,
                head.c.checkpoint_ns == table.c.checkpoint_ns,
                head.c.checkpoint_id == self._newest(table),
                compile_filter(whole_if, head.c["metadata"], self.dialect),
            )
        )

    def _newest(self, table: Table) -> ColumnElement[Any]:
        """The newest checkpoint id of the row's own (user, thread, namespace)."""
        newest = self.g.checkpoints.alias("newest")
        return (
            select(func.max(newest.c.checkpoint_id))
            .where(
                newest.c.tenant_id == table.c.tenant_id,
                newest.c.user_id == table.c.user_id,
                newest.c.session_id == table.c.session_id,
                newest.c.checkpoint_ns == table.c.checkpoint_ns,
            )
            .scalar_subquery()
        )

    def delete_checkpoints(self, conn: Connection, user: Scope, q: graph.CheckpointQuery) -> int:
        t, w = self.g.checkpoints, self.g.writes
        keys = [
            (row.session_id, row.checkpoint_ns, row.checkpoint_id)
            for row in conn.execute(
                select(t.c.session_id, t.c.checkpoint_ns, t.c.checkpoint_id).where(
                    *self._matching(user, q)
                )
            )
        ]
        for chunk in chunks(keys):
            for table in (w, t):
                key = tuple_(table.c.session_id, table.c.checkpoint_ns, table.c.checkpoint_id)
                conn.execute(delete(table).where(*self._user(table, user), key.in_(chunk)))
        return len(keys)

    # -- store items

    def _live(self, now: datetime) -> Cond:
        i = self.g.items
        return or_(i.c.expires_at.is_(None), i.c.expires_at > now)

    def _refs(self, refs: Sequence[graph.ItemRef]) -> Cond:
        i = self.g.items
        return tuple_(i.c.namespace, i.c.key).in_(
            [(graph.encode_namespace(ns), k) for ns, k in refs]
        )

    def _label(self, index: int) -> ColumnElement[Any]:
        """The namespace label at ``index`` (negative: from the end), the index bound."""
        column = self.g.items.c.namespace
        if self.dialect == "postgresql":
            return cast(column, JSONB).op("->>", return_type=Text)(
                bindparam(None, index, type_=Integer)
            )
        path = f"$[{index}]" if index >= 0 else f"$[#{index}]"
        return func.json_extract(column, path, type_=Text)

    def _rule(self, rule: graph.MatchRule) -> list[Cond]:
        i = self.g.items
        n = len(rule.path)
        where: list[Cond] = [i.c.depth >= n] if n else []
        for j, label in enumerate(rule.path):
            if label == graph.WILDCARD:
                continue
            index = j if rule.kind == "prefix" else j - n
            where.append(self._label(index) == label)
        return where

    def _prefix(self, prefix: graph.Namespace) -> list[Cond]:
        """A search prefix is literal: ``*`` is just a label here."""
        i = self.g.items
        if not prefix:
            return []
        where: list[Cond] = [i.c.depth >= len(prefix)]
        where += [self._label(j) == label for j, label in enumerate(prefix)]
        return where

    def _filter(self, node: Filter | None) -> list[Cond]:
        if node is None:
            return []
        return [compile_filter(node, self.g.items.c["value"], self.dialect)]

    def get_items(
        self, conn: Connection, user: Scope, refs: list[graph.ItemRef], now: datetime
    ) -> list[graph.StoreItem]:
        i = self.g.items
        by_ref: dict[graph.ItemRef, graph.StoreItem] = {}
        for chunk in chunks(refs):
            query = select(i).where(*self._user(i, user), self._refs(chunk), self._live(now))
            for row in conn.execute(query):
                item = row_to_item(row, vectors=False)
                by_ref[(item.namespace, item.key)] = item
        return [by_ref[ref] for ref in dict.fromkeys(refs) if ref in by_ref]

    def put_items(
        self,
        conn: Connection,
        user: Scope,
        items: list[graph.StoreItem],
        deletes: list[graph.ItemRef],
    ) -> None:
        i = self.g.items
        for chunk in chunks(deletes):
            conn.execute(delete(i).where(*self._user(i, user), self._refs(chunk)))
        if not items:
            return
        rows = []
        for item in items:
            fields, packed = pack(item.embeddings) if item.embeddings else (None, None)
            rows.append(
                {
                    **self._owner(user),
                    "namespace": graph.encode_namespace(item.namespace),
                    "key": item.key,
                    "depth": len(item.namespace),
                    "value": item.value,
                    "created_at": item.created_at or utc_now(),
                    "updated_at": item.updated_at or utc_now(),
                    "expires_at": item.expires_at,
                    "ttl_minutes": item.ttl,
                    "embedding_fields": fields,
                    "embeddings": packed,
                }
            )
        conn.execute(self._upsert(i, _ITEM_CHANGES), rows)

    def search_items(
        self, conn: Connection, user: Scope, q: graph.ItemQuery, now: datetime
    ) -> list[graph.StoreItem]:
        i = self.g.items
        query = select(i).where(
            *self._user(i, user), self._live(now), *self._prefix(q.prefix), *self._filter(q.filter)
        )
        query = query.order_by(i.c.updated_at.desc(), i.c.namespace, i.c.key)
        if not q.vectors:
            query = query.limit(q.limit).offset(q.offset or None)
        return [row_to_item(row, vectors=q.vectors) for row in conn.execute(query)]

    def refresh_items(
        self, conn: Connection, user: Scope, items: list[graph.StoreItem], now: datetime
    ) -> None:
        i = self.g.items
        by_ttl: dict[float, list[graph.ItemRef]] = {}
        for item in items:
            if item.ttl is not None:
                by_ttl.setdefault(item.ttl, []).append((item.namespace, item.key))
        for ttl, refs in by_ttl.items():
            for chunk in chunks(refs):
                conn.execute(
                    update(i)
                    .where(*self._user(i, user), self._refs(chunk), i.c.ttl_minutes == ttl)
                    .values(expires_at=now + timedelta(minutes=ttl))
                )

    def list_namespaces(
        self, conn: Connection, user: Scope, rules: list[graph.MatchRule], now: datetime
    ) -> list[graph.Namespace]:
        i = self.g.items
        where = [*self._user(i, user), self._live(now)]
        for rule in rules:
            where += self._rule(rule)
        query = select(i.c.namespace).where(*where).distinct()
        return [graph.decode_namespace(row.namespace) for row in conn.execute(query)]


class SQLGraph:
    """The graph half of ``SQLBackend``: its statements (each operation one transaction
    opened for the user, by ``SQLBackend._perform``)."""

    if TYPE_CHECKING:
        tables: Tables
        dialect: str

    @cached_property
    def _graph_ops(self) -> GraphOps:
        assert self.tables.graph is not None
        return GraphOps(self.tables.graph, self.dialect)
