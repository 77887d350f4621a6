"""``read_turn`` on one connection: a session and its newest messages in one statement.

One statement, so one snapshot on PostgreSQL too (under READ COMMITTED each statement of a
transaction sees its own), and one round trip: the session's row, left-joined to the
newest messages of the same (tenant, user, session), each table filtered by the scope.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, select

from ...records import Message, SessionRecord
from ...scope import Scope
from ._history import _JSON_COLUMNS, _row_to_session, _stored_text, _text_row_to_message
from ._ops_base import OpsBase

__all__ = ["TurnOps"]


_SESSION = "s_"  # the session's columns in the join, apart from the messages'


class TurnOps(OpsBase):
    """What a chat turn reads before its agent runs."""

    def read_turn(
        self, conn: Connection, user: Scope, session_id: str, last: int | None
    ) -> tuple[SessionRecord | None, list[Message]]:
        """The user's session and its newest ``last`` messages (``None``: all), oldest
        first; no row: no such session of this user (``None``, and no messages)."""
        scope = user.with_session(session_id)
        if last is None:  # no LIMIT at all: SQLite refuses a NULL one
            stmt, params = self._once("read_session", self._read_turn), self._scope_params(scope)
        else:
            stmt = self._once("read_turn", lambda: self._read_turn(bindparam("muxi_last")))
            params = self._scope_params(scope, muxi_last=last)
        rows = conn.execute(stmt, params).all()
        if not rows:
            return None, []
        messages = [_text_row_to_message(row) for row in rows if row.seq is not None]
        return _row_to_session(rows[0], _SESSION), messages

    def _read_turn(self, last: Any = None) -> Any:
        s, m = self.t.sessions, self.t.messages
        as_text = (lambda c: cast(c, Text)) if self.dialect == "postgresql" else _stored_text
        columns = [as_text(c).label(c.name) if c.name in _JSON_COLUMNS else c for c in m.c]
        newest = (
            select(*columns)
            .where(*self._bound_session(m))
            .order_by(m.c.seq.desc())
            .limit(last)
            .subquery("newest")
        )
        # Joined on the tenant too: both sides are one tenant's rows (a Citus router query).
        joined = s.outerjoin(newest, newest.c.tenant_id == s.c.tenant_id)
        return (
            select(*(c.label(f"{_SESSION}{c.name}") for c in s.c), *newest.c)
            .select_from(joined)
            .where(
                s.c.tenant_id == bindparam("muxi_tenant"),
                s.c.user_id == bindparam("muxi_user"),
                s.c.id == bindparam("muxi_session"),
            )
            .order_by(newest.c.seq)
        )
