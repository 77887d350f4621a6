"""PostgreSQL: an append to an active session in one network round trip.

Through SQLAlchemy ``append_to_session`` is BEGIN, ``scope_enter``, the touch of the session
(only while it is active) with the reservation of the messages' seqs (one statement), the
insert, COMMIT: five round trips. A plain append (to a session that exists, no receipt)
is here one statement, the touch, the reservation and the insert as data-modifying CTEs
(the messages as arrays, numbered from the reserved seqs by their order), queued with
BEGIN, ``scope_enter`` and COMMIT in one flight (``_pipeline``): row-level security checks
every row it writes, as on the usual path. The session's row lock, then the counter's,
order concurrent appends as there. A session the touch finds missing or expired makes the
statement write nothing (each step reads the one before); it says whether the session
exists, so the append fails as on the usual path (``SessionExpired`` if it does, else
``SessionNotFound``), in the same round trip. An append
that creates its session, or stores a receipt, takes the usual path. The touch and the
reservation are the usual path's statement too (``touch_and_reserve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Boolean, TextClause, TextualSelect, bindparam, text
from sqlalchemy.engine import Dialect

from ...errors import SessionExpired, SessionNotFound
from ...records import Message
from .._message_ops import AppendToSession
from ._ops_base import utc, utc_now
from ._pipeline import Pipelined
from ._schema import Tables
from ._sqlite_append import json_text, numbered

if TYPE_CHECKING:
    from ._history import HistoryOps

__all__ = ["append_pipelined", "touch_and_reserve"]


def append_pipelined(ops: HistoryOps, db: Pipelined, turn: AppendToSession) -> list[Message]:
    """``ops.append_to_session`` on PostgreSQL, in one round trip when it is a plain append."""
    messages = turn.messages
    if turn.create is not None or turn.receipt is not None or not messages:
        return ops.append_to_session(db.scoped(), turn)
    scope, n, now = turn.scope, len(messages), utc_now()
    times = [utc(m.created_at or now) for m in messages]
    stmt = ops._once("pg:append", lambda: _append_text(ops, db.conn.dialect))
    params = {
        "tenant_id": scope.tenant_id,
        "user_id": scope.user_id,
        "session_id": scope.session_id,
        "muxi_last": turn.now,
        "muxi_expires": turn.expires_at,
        "muxi_active": turn.now,
        "muxi_first": n + 1,
        "muxi_n": n,
        "muxi_roles": [m.role for m in messages],
        "muxi_contents": [json_text(m.content) for m in messages],
        "muxi_metadata": [json_text(m.metadata) for m in messages],
        "muxi_tool_calls": [json_text(m.tool_calls) for m in messages],
        "muxi_statuses": [m.status for m in messages],
        "muxi_times": times,
    }
    found = db.rows(stmt, params)[0]
    if found["next_seq"] is None:  # nothing touched: as the usual path, say why
        sid = str(scope.session_id)
        raise SessionExpired(sid) if found["session_exists"] else SessionNotFound(sid)
    first = int(found["next_seq"]) - n
    return [
        numbered(m, first + i, at) for i, (m, at) in enumerate(zip(messages, times, strict=True))
    ]


def _append_text(ops: HistoryOps, dialect: Dialect) -> TextualSelect:
    """Touch (if active), reserve ``muxi_n`` seqs, insert the messages numbered from the
    first of them; answers the counter's new value (NULL when nothing was touched) and
    whether the session exists at all (expired: the statement's snapshot, before it)."""
    name = dialect.identifier_preparer.format_table
    stored, sessions = name(ops.t.messages), name(ops.t.sessions)
    written = (
        f", written AS (INSERT INTO {stored} (tenant_id, user_id, session_id, seq, role, "  # noqa: S608
        "content, metadata, tool_calls, status, created_at) "
        "SELECT :tenant_id, :user_id, :session_id, reserved.next_seq - :muxi_n + m.n - 1, "
        "m.role, m.content, m.metadata, m.tool_calls, m.status, m.created_at "
        "FROM reserved, unnest(CAST(:muxi_roles AS text[]), CAST(:muxi_contents AS json[]), "
        "CAST(:muxi_metadata AS json[]), CAST(:muxi_tool_calls AS json[]), "
        "CAST(:muxi_statuses AS text[]), CAST(:muxi_times AS timestamptz[])) "
        "WITH ORDINALITY AS m(role, content, metadata, tool_calls, status, created_at, n)) "
    )
    answer = (
        "SELECT (SELECT next_seq FROM reserved) AS next_seq, "  # noqa: S608 (quoted names)
        f"EXISTS (SELECT 1 FROM {sessions} WHERE tenant_id = :tenant_id "
        "AND user_id = :user_id AND id = :session_id) AS session_exists"
    )
    stmt = touch_and_reserve(ops.t, dialect, written + answer)
    return stmt.columns(next_seq=BigInteger, session_exists=Boolean)


def touch_and_reserve(tables: Tables, dialect: Dialect, then: str) -> TextClause:
    """``WITH touched AS (...), reserved AS (...)`` then ``then``: touch the session only
    if active at ``muxi_active``, and reserve ``muxi_n`` seqs (``muxi_first`` for a new
    counter) only for a session touched; ``reserved.next_seq`` is the counter's new value.
    (``HistoryOps._touch_and_reserve``, and ``_append_text`` with the insert after it.)"""
    name = dialect.identifier_preparer.format_table
    sessions, counters = name(tables.sessions), name(tables.counters)
    when = tables.sessions.c.expires_at.type
    return text(
        f"WITH touched AS (UPDATE {sessions} "  # noqa: S608 (quoted table names)
        "SET last_active_at = :muxi_last, expires_at = :muxi_expires "
        "WHERE tenant_id = :tenant_id AND user_id = :user_id AND id = :session_id "
        "AND expires_at > :muxi_active RETURNING 1), "
        f"reserved AS (INSERT INTO {counters} (tenant_id, user_id, session_id, next_seq) "
        "SELECT :tenant_id, :user_id, :session_id, :muxi_first FROM touched "
        "ON CONFLICT (tenant_id, user_id, session_id) "
        f"DO UPDATE SET next_seq = {counters}.next_seq + :muxi_n RETURNING next_seq) " + then
    ).bindparams(
        bindparam("muxi_last", type_=when),
        bindparam("muxi_expires", type_=when),
        bindparam("muxi_active", type_=when),
    )
