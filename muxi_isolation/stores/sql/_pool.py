"""Pool events on PostgreSQL: a pooled connection is reset on its way back only when a
statement that was not one of the backend's operations ran on it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

__all__ = ["claim", "discard_session_state", "mark_checkout", "mark_foreign"]

_OWN = "muxi_own"  # execution option: the statement is one of the backend's operations
_DIRTY = "muxi_dirty"  # pooled connection info: it ran a statement that was not


def mark_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Every checkout is someone else's until the backend claims it (``claim``): a
    connection taken with ``raw_connection()`` runs SQL no event sees, so it is reset."""
    record.info[_DIRTY] = True


def claim(conn: Connection) -> None:
    """The connection runs one of the backend's operations: nothing to reset for it, unless
    a statement that is not the backend's is seen (``mark_foreign``)."""
    conn.execution_options(**{_OWN: True})
    conn.info.pop(_DIRTY, None)


def mark_foreign(conn: Connection, *_args: Any) -> None:
    """Note on the pooled connection any statement the backend's operations did not send.
    Theirs leave nothing on the session (every setting they make, every lock they take is
    transaction-local, and no table is created), so only such a connection needs a reset."""
    if not conn.get_execution_options().get(_OWN):
        conn.info[_DIRTY] = True


def discard_session_state(dbapi_connection: Any, record: Any, state: Any) -> None:
    """On its way back to the pool, a PostgreSQL connection that ran any statement of
    someone else's (``mark_foreign``) forgets everything it may have left on the session:
    temporary tables, session-level settings, prepared statements, cursors, advisory locks,
    LISTENs (``DISCARD ALL``, outside a transaction). The backend's own calls skip that round
    trip."""
    if state.terminate_only or not state.asyncio_safe:
        return  # being closed, or garbage-collected off its event loop: nothing to reuse
    dbapi_connection.rollback()
    if not record.info.pop(_DIRTY, False):
        return
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("DISCARD ALL")
    finally:
        dbapi_connection.autocommit = False
