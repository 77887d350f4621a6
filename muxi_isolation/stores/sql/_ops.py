"""The storage operations, written once against a synchronous SQLAlchemy ``Connection``.

The backend runs each one inside a transaction it opened for a scope: directly on the sync
engine, or through ``AsyncConnection.run_sync`` on the async engine, where the same code
drives the async driver (psycopg's async mode, aiosqlite) without a thread per call.

Every statement names ``tenant_id`` and ``user_id`` by equality (a Citus router query);
inserts carry them as values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Table, delete, select, tuple_, union

from ...scope import Scope
from . import _text
from ._history import HistoryOps
from ._memories import MemoryOps
from ._ops_base import Cond
from ._turn import TurnOps
from ._vector_cache import versions_table

__all__ = ["Ops"]


class Ops(HistoryOps, TurnOps, MemoryOps):
    """Sessions, messages and memories on one connection; the caller owns the transaction.
    Here: the maintenance that spans them (forget a user or a tenant, purge expired)."""

    def forget_user(self, conn: Connection, user: Scope) -> dict[str, int]:
        self.vectors.cache.drop(user.tenant_id, user.user_id)
        return self._forget(conn, lambda table: self._user(table, user))

    def forget_tenant(self, conn: Connection, tenant_id: str) -> dict[str, int]:
        self.vectors.cache.drop(tenant_id)
        return self._forget(conn, lambda table: [table.c.tenant_id == tenant_id])

    def _kind(self, table: Table) -> str:
        """A table's name in counts: ``muxi_messages`` -> ``messages``."""
        return table.name[len(self.t.prefix) :]

    def _forget(self, conn: Connection, where: Callable[[Table], list[Cond]]) -> dict[str, int]:
        """Delete from every scoped table, so a table added to the schema is covered too."""
        counts = {}
        with self._scrubbing(conn):
            for table in self.t.scoped:
                gone = conn.execute(delete(table).where(*where(table))).rowcount
                if gone or table not in self.t.optional:
                    counts[self._kind(table)] = gone
            if self.dialect == "sqlite":  # after the memories: their triggers wrote versions
                versions = versions_table(self.t)
                conn.execute(delete(versions).where(*where(versions)))
            _text.scrub(conn, self.t)  # the forgotten memories' words out of the text index
        counts.pop(self._kind(self.t.counters), None)  # bookkeeping, not data
        return counts

    @contextmanager
    def _scrubbing(self, conn: Connection) -> Iterator[None]:
        """SQLite: zero what these deletes free, so no deleted text stays in the file."""
        if self.dialect != "sqlite":
            yield
            return
        # Each PRAGMA answers a row: close it, or its open statement holds a read lock on the
        # pooled connection, and the log checkpoint after a forget waits on it.
        conn.exec_driver_sql("PRAGMA secure_delete = ON").close()
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA secure_delete = OFF").close()

    def list_tenants(self, conn: Connection) -> list[str]:
        query = union(*(select(t.c.tenant_id) for t in self.t.scoped))
        return sorted(str(tenant) for tenant in conn.scalars(query))

    def purge_expired(
        self, conn: Connection, tenant_id: str, before: datetime, limit: int
    ) -> tuple[dict[str, int], int]:
        """Up to ``limit`` expired sessions of one tenant, gone whole; (counts, sessions)."""
        s = self.t.sessions
        expired = [s.c.tenant_id == tenant_id, s.c.expires_at <= before]
        doomed = select(s.c.user_id, s.c.id).where(*expired).order_by(s.c.expires_at).limit(limit)
        if self.dialect == "postgresql":
            doomed = doomed.with_for_update(skip_locked=True)
        keys = [(str(r.user_id), str(r.id)) for r in conn.execute(doomed)]
        if not keys:
            return {}, 0
        counts: dict[str, int] = {}
        with self._scrubbing(conn):
            for table in self._session_buffers():
                mine = tuple_(table.c.user_id, table.c.session_id).in_(keys)
                where = [table.c.tenant_id == tenant_id, mine]
                n = conn.execute(delete(table).where(*where)).rowcount
                if n or table not in self.t.optional:
                    counts[self._kind(table)] = n
            gone = delete(s).where(*expired, tuple_(s.c.user_id, s.c.id).in_(keys))
            counts["sessions"] = conn.execute(gone).rowcount
        counts.pop(self._kind(self.t.counters), None)
        return counts, len(keys)
