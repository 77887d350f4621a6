"""What every SQL operation shares: the tables, the dialect, statements built once, and
the predicates that name the scope (``tenant_id`` and ``user_id`` by equality: a Citus
router query)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ...filters import Filter
from ...quotas import NO_LIMITS, lock_key
from ...scope import Scope
from ._filters import compile_filter
from ._schema import Tables
from ._vectors import VectorPlanner

__all__ = ["Cond", "OpsBase", "utc", "utc_now"]

Cond = ColumnElement[bool]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class OpsBase:
    """The tables and dialect of one store; the caller owns the transaction."""

    def __init__(self, tables: Tables, dialect: str, vectors: VectorPlanner) -> None:
        self.t = tables
        self.dialect = dialect
        self.vectors = vectors
        self.limits = NO_LIMITS  # the backend's (``SQLBackend.limits``)
        self._built: dict[str, Any] = {}
        self._built_for: Tables | None = None

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        """A hot path's statement, built once for the current tables; the scope and values
        are bound parameters. Building and keying a statement tree cost more than running
        it on SQLite."""
        if self._built_for is not self.t:
            self._built, self._built_for = {}, self.t
        if name not in self._built:
            self._built[name] = build()
        return self._built[name]

    def _bound_session(self, table: Table) -> list[Cond]:
        """``_session`` with the scope as the parameters of ``_scope_params``."""
        return [
            table.c.tenant_id == bindparam("muxi_tenant"),
            table.c.user_id == bindparam("muxi_user"),
            table.c.session_id == bindparam("muxi_session"),
        ]

    @staticmethod
    def _scope_params(scope: Scope, **more: Any) -> dict[str, Any]:
        params = {"muxi_tenant": scope.tenant_id, "muxi_user": scope.user_id, **more}
        if scope.session_id is not None:
            params["muxi_session"] = scope.session_id
        return params

    # -- predicates

    @staticmethod
    def _user(table: Table, user: Scope) -> list[Cond]:
        return [table.c.tenant_id == user.tenant_id, table.c.user_id == user.user_id]

    def _session(self, table: Table, scope: Scope) -> list[Cond]:
        return [*self._user(table, scope), table.c.session_id == scope.session_id]

    def _messages(self, scope: Scope, status: str | None) -> list[Cond]:
        where = self._session(self.t.messages, scope)
        if status is not None:
            where.append(self.t.messages.c.status == status)
        return where

    def _filter(self, node: Filter | None) -> list[Cond]:
        if node is None:
            return []
        return [compile_filter(node, self.t.memories.c["metadata"], self.dialect)]

    def _counted(self, conn: Connection, kind: str, table: Table, user: Scope) -> Callable[[], int]:
        """Count the user's rows of ``table`` for a quota, once no other writer of this user
        can add to them before we commit: SQLite's write transaction (``BEGIN IMMEDIATE``)
        already holds the file; PostgreSQL takes an advisory lock per (tenant, user), so
        other users never wait. Row-level security still applies to the count."""
        if self.dialect == "postgresql":
            key = lock_key(kind, user.tenant_id, user.user_id)
            conn.execute(select(func.pg_advisory_xact_lock(key)))
        query = select(func.count()).select_from(table).where(*self._user(table, user))
        return lambda: int(conn.scalar(query) or 0)

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _session_buffers(self) -> list[Table]:
        """Tables kept per session (messages, their counter, ...): memories are the user's."""
        user_level = (self.t.sessions, self.t.memories)
        return [t for t in self.t.scoped if t not in user_level and "session_id" in t.c]
