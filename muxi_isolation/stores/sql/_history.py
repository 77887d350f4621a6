"""Sessions and their messages (with idempotency receipts), on one connection."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Text,
    TextClause,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from ...errors import DuplicateRequest, SessionExists, SessionExpired, SessionNotFound
from ...quotas import SESSIONS, check_count
from ...records import ACTIVE, ARCHIVED, Message, Receipt, SessionRecord
from ...scope import Scope, known_scope
from .._message_ops import AppendToSession, GetMessages
from ..base import RECEIPT_WINDOW
from . import _pg_append
from ._driver import Driver
from ._ops_base import utc, utc_now
from ._pipeline import Pipelined
from ._sqlite_append import DriverAppend

__all__ = ["HistoryOps"]


def _row_to_message(row: Row[Any]) -> Message:
    m = row._mapping
    return Message(
        m["role"],
        m["content"],
        dict(m["metadata"] or {}),
        list(m["tool_calls"] or []),
        m["status"],
        m["created_at"],
        m["seq"],
        known_scope(m["tenant_id"], m["user_id"], m["session_id"]),
    )


_JSON_COLUMNS = ("content", "metadata", "tool_calls")


def _json(raw: str) -> Any:
    """A JSON column read as text, decoded: the common values (no metadata, no tool calls,
    text without escapes) without the json module, which took a quarter of a history read."""
    if raw == "{}":
        return {}
    if raw == "[]":
        return []
    if raw[:1] == '"' and "\\" not in raw:  # a JSON string with no escape in it
        return raw[1:-1]
    return json.loads(raw)


def _text_row_to_message(row: Row[Any]) -> Message:
    return _text_message_of(row._mapping)


def _text_message_of(m: Mapping[Any, Any]) -> Message:
    """``_row_to_message`` for a row whose JSON columns were read as text (``Ops._read``),
    by column name (SQLAlchemy's row, or ``_pipeline``'s)."""
    return Message(
        m["role"],
        _json(m["content"]),
        dict(_json(m["metadata"]) or {}),
        list(_json(m["tool_calls"]) or []),
        m["status"],
        m["created_at"],
        m["seq"],
        known_scope(m["tenant_id"], m["user_id"], m["session_id"]),
    )


def _stored_text(column: Any) -> Any:
    """SQLite keeps JSON as text: read it as stored."""
    return type_coerce(column, Text)


def _row_to_session(row: Row[Any], prefix: str = "") -> SessionRecord:
    """The session of ``row``, whose columns are named ``prefix`` + column (in a join)."""
    m = row._mapping
    return SessionRecord(
        m[f"{prefix}id"],
        known_scope(m[f"{prefix}tenant_id"], m[f"{prefix}user_id"]),
        m[f"{prefix}created_at"],
        m[f"{prefix}last_active_at"],
        m[f"{prefix}expires_at"],
    )


def _row_to_receipt(row: Row[Any]) -> Receipt:
    m = row._mapping
    scope = known_scope(m["tenant_id"], m["user_id"])
    seqs = tuple(int(n) for n in m["seqs"])
    return Receipt(m["key"], m["request"], dict(m["response"]), seqs, m["created_at"], scope)


class HistoryOps(DriverAppend):
    """Sessions, messages and receipts."""

    # PostgreSQL: an append's touch and seq reservation in one statement (off under Citus).
    one_trip_append = True

    def insert_session(
        self, conn: Connection, record: SessionRecord, receipt: Receipt | None = None
    ) -> None:
        self.put_receipt(conn, receipt)
        s = record.scope
        allowed = self.limits.for_tenant(s.tenant_id).max_sessions_per_user
        if allowed is not None:
            check_count(SESSIONS, allowed, self._counted(conn, SESSIONS, self.t.sessions, s), 1)
        try:
            conn.execute(
                insert(self.t.sessions).values(
                    tenant_id=s.tenant_id,
                    user_id=s.user_id,
                    id=record.id,
                    created_at=record.created_at,
                    last_active_at=record.last_active_at,
                    expires_at=record.expires_at,
                )
            )
        except IntegrityError as exc:
            raise SessionExists(record.id) from exc

    def put_receipt(
        self, conn: Connection, receipt: Receipt | None, stored: Sequence[Message] = ()
    ) -> None:
        """Keep a request's receipt; one already kept under its key (and fresh) refuses the
        whole transaction (``DuplicateRequest``): a retry of a stored request writes nothing."""
        if receipt is None:
            return
        assert receipt.scope is not None and receipt.created_at is not None
        r, user = self.t.receipts, receipt.scope
        assert r is not None
        mine = [*self._user(r, user), r.c.key == receipt.key]
        stale = receipt.created_at - RECEIPT_WINDOW
        conn.execute(delete(r).where(*mine, r.c.created_at < stale))
        seqs = [m.seq for m in stored]
        row = {"key": receipt.key, "request": receipt.request, "response": receipt.response}
        try:  # the error ends the caller's transaction: nothing of the request is written
            conn.execute(
                insert(r).values(
                    tenant_id=user.tenant_id,
                    user_id=user.user_id,
                    created_at=receipt.created_at,
                    seqs=seqs,
                    **row,
                )
            )
        except IntegrityError as exc:
            raise DuplicateRequest(receipt.key) from exc

    def get_receipt(self, conn: Connection, user: Scope, key: str) -> Receipt | None:
        r = self.t.receipts
        assert r is not None
        row = conn.execute(select(r).where(*self._user(r, user), r.c.key == key)).first()
        return None if row is None else _row_to_receipt(row)

    def get_session(self, conn: Connection, user: Scope, session_id: str) -> SessionRecord | None:
        s = self.t.sessions
        row = conn.execute(select(s).where(*self._user(s, user), s.c.id == session_id)).first()
        return None if row is None else _row_to_session(row)

    def list_sessions(self, conn: Connection, user: Scope) -> list[SessionRecord]:
        s = self.t.sessions
        rows = conn.execute(select(s).where(*self._user(s, user)).order_by(s.c.created_at, s.c.id))
        return [_row_to_session(row) for row in rows]

    def touch_session(
        self,
        conn: Connection,
        user: Scope,
        session_id: str,
        last_active_at: datetime,
        expires_at: datetime,
        active_at: datetime | None = None,
    ) -> bool:
        """Move the session's times; with ``active_at``, only if it has not expired by then."""
        stmt = self._driver(conn, f"touch:{active_at is not None}", lambda: self._touch(active_at))
        params = {
            "muxi_tenant": user.tenant_id,
            "muxi_user": user.user_id,
            "muxi_id": session_id,
            "muxi_last": last_active_at,
            "muxi_expires": expires_at,
            "muxi_active": active_at,
        }
        return stmt.run(conn, params).rowcount > 0

    def _touch(self, active_at: datetime | None) -> Any:
        s = self.t.sessions
        where = [
            s.c.tenant_id == bindparam("muxi_tenant"),
            s.c.user_id == bindparam("muxi_user"),
            s.c.id == bindparam("muxi_id"),
        ]
        if active_at is not None:
            where.append(s.c.expires_at > bindparam("muxi_active", type_=s.c.expires_at.type))
        return (
            update(s)
            .where(*where)
            .values(
                last_active_at=bindparam("muxi_last", type_=s.c.last_active_at.type),
                expires_at=bindparam("muxi_expires", type_=s.c.expires_at.type),
            )
        )

    def _driver(self, conn: Connection, name: str, build: Callable[[], Any]) -> Driver:
        driver: Driver = self._once(f"driver:{name}", lambda: Driver.of(conn, build()))
        return driver

    def append_to_session(self, conn: Connection, turn: AppendToSession) -> list[Message]:
        """Touch the session if it is active and append, in the caller's one transaction
        (storing ``create`` first, and the ``receipt`` last, when given). Takes the checked
        operation whole (``SQLBackend._call_of``): its six fields are this step's arguments."""
        scope, now = turn.scope, turn.now
        user, sid = scope.user(), str(scope.session_id)
        if turn.create is not None:
            self.insert_session(conn, turn.create)
        n, first = len(turn.messages), None
        if n and self.one_trip_append and self.dialect == "postgresql":
            first = self._touch_and_reserve(conn, scope, now, turn.expires_at, n)
            touched = first is not None
        else:
            touched = self.touch_session(conn, user, sid, now, turn.expires_at, active_at=now)
        if not touched:
            found = self.get_session(conn, user, sid) is not None
            raise SessionExpired(sid) if found else SessionNotFound(sid)
        if first is None:
            stored = self.append_messages(conn, scope, turn.messages)
        else:
            stored = self._insert_messages(conn, scope, turn.messages, first)
        self.put_receipt(conn, turn.receipt, stored)
        return stored

    def _touch_and_reserve(
        self, conn: Connection, scope: Scope, now: datetime, expires_at: datetime, n: int
    ) -> int | None:
        """PostgreSQL: ``touch_session`` (only if active at ``now``) and ``_next_seqs`` in one
        statement: the counter moves only for a session the touch found; ``None`` if none."""
        stmt = self._driver(conn, "touch_and_reserve", lambda: self._touch_and_reserve_text(conn))
        params = {
            "tenant_id": scope.tenant_id,
            "user_id": scope.user_id,
            "session_id": scope.session_id,
            "muxi_last": now,
            "muxi_expires": expires_at,
            "muxi_active": now,
            "muxi_first": n + 1,
            "muxi_n": n,
        }
        row = stmt.run(conn, params).first()
        return None if row is None else int(row[0]) - n

    def _touch_and_reserve_text(self, conn: Connection) -> TextClause:
        return _pg_append.touch_and_reserve(self.t, conn.dialect, "SELECT next_seq FROM reserved")

    def renew_session(
        self, conn: Connection, user: Scope, session_id: str, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        """Extend an active session and read it back, in the caller's one transaction."""
        if not self.touch_session(conn, user, session_id, now, expires_at, active_at=now):
            return None
        return self.get_session(conn, user, session_id)

    def delete_session(self, conn: Connection, user: Scope, session_id: str) -> bool:
        scope = user.with_session(session_id)
        for table in self._session_buffers():  # messages, counters, LangGraph checkpoints
            conn.execute(delete(table).where(*self._session(table, scope)))
        s = self.t.sessions
        gone = conn.execute(delete(s).where(*self._user(s, user), s.c.id == session_id))
        return gone.rowcount > 0

    # -- messages

    def _counter(self, scope: Scope, start: int, on_conflict: Any) -> Any:
        """Upsert the session's next-seq counter: ``start`` if new, else ``on_conflict``."""
        c = self.t.counters
        stmt = self._insert(c).values(
            tenant_id=scope.tenant_id,
            user_id=scope.user_id,
            session_id=scope.session_id,
            next_seq=start,
        )
        return stmt.on_conflict_do_update(
            index_elements=[c.c.tenant_id, c.c.user_id, c.c.session_id],
            set_={"next_seq": on_conflict},
        )

    def _next_seqs(self, conn: Connection, scope: Scope, n: int) -> int:
        """Reserve ``n`` seqs for the session; the counter row's lock orders appends."""
        stmt = self._driver(conn, "next_seqs", lambda: self._next_seqs_text(conn.dialect))
        params = {
            "tenant_id": scope.tenant_id,
            "user_id": scope.user_id,
            "session_id": scope.session_id,
            "muxi_first": n + 1,
            "muxi_n": n,
        }
        return int(stmt.run(conn, params).scalar_one()) - n

    def _next_seqs_text(self, dialect: Dialect) -> TextClause:
        """The session's next-seq counter upsert as text: SQLAlchemy compiles an ON CONFLICT
        construct anew on every execution (it has no cache key); the same SQL runs on SQLite
        and PostgreSQL."""
        name = dialect.identifier_preparer.format_table(self.t.counters)
        return text(
            f"INSERT INTO {name} (tenant_id, user_id, session_id, next_seq) "  # noqa: S608
            "VALUES (:tenant_id, :user_id, :session_id, :muxi_first) "
            "ON CONFLICT (tenant_id, user_id, session_id) "
            f"DO UPDATE SET next_seq = {name}.next_seq + :muxi_n RETURNING next_seq"
        )

    def append_messages(
        self, conn: Connection, scope: Scope, messages: Sequence[Message]
    ) -> list[Message]:
        if not messages:
            return []
        return self._insert_messages(
            conn, scope, messages, self._next_seqs(conn, scope, len(messages))
        )

    def _insert_messages(
        self, conn: Connection, scope: Scope, messages: Sequence[Message], first: int
    ) -> list[Message]:
        """Store the messages under the seqs from ``first`` on (reserved by the caller)."""
        stored = self._numbered(messages, first)
        if self.dialect == "sqlite":  # as the memories' upsert: no per-row work
            conn.exec_driver_sql(*self._message_batch(conn, scope, stored))
            return stored
        conn.execute(insert(self.t.messages), [self._message_row(scope, m) for m in stored])
        return stored

    def replace_messages(
        self, conn: Connection, scope: Scope, messages: Sequence[Message]
    ) -> list[Message]:
        conn.execute(delete(self.t.messages).where(*self._session(self.t.messages, scope)))
        return self.append_messages(conn, scope, messages)

    def get_messages(self, conn: Connection, read: GetMessages) -> list[Message]:
        """The operation whole, as ``append_to_session``: its window is this step's arguments."""
        m = self.t.messages
        if read.last == 0:
            return []
        if read.limit is None and not read.offset:  # a whole history, or its last N: built once
            stmt, params = self._whole(read)
            rows = [row._mapping for row in conn.execute(stmt, params)]
            return [_text_message_of(row) for row in (reversed(rows) if read.last else rows)]
        query = select(m).where(*self._messages(read.scope, read.status))
        query = query.order_by(m.c.seq).limit(read.limit).offset(read.offset or None)
        return [_row_to_message(row) for row in conn.execute(query).all()]

    def append_pipelined(self, db: Pipelined, turn: AppendToSession) -> list[Message]:
        """``append_to_session`` on PostgreSQL: a plain append in one round trip."""
        return _pg_append.append_pipelined(self, db, turn)

    def messages_on_driver(self, db: Pipelined, read: GetMessages) -> list[Message]:
        """``get_messages`` of a whole history or its last N on PostgreSQL, in one round
        trip: its scope opened and its transaction committed in the same flight."""
        rows = db.rows(*self._whole(read))
        return [_text_message_of(row) for row in (reversed(rows) if read.last else rows)]

    def _whole(self, read: GetMessages) -> tuple[Any, dict[str, Any]]:
        """The statement (built once) and parameters of a whole history or its last N."""
        newest, status = read.last is not None, read.status
        stmt = self._once(
            f"messages:{status is not None}:{newest}", lambda: self._read(status, newest)
        )
        return stmt, self._scope_params(read.scope, muxi_status=status, muxi_last=read.last)

    def _read(self, status: str | None, newest: bool) -> Any:
        m = self.t.messages
        as_text = (lambda c: cast(c, Text)) if self.dialect == "postgresql" else _stored_text
        columns = [as_text(c).label(c.name) if c.name in _JSON_COLUMNS else c for c in m.c]
        query = select(*columns).where(*self._bound_session(m))
        if status is not None:
            query = query.where(m.c.status == bindparam("muxi_status"))
        if newest:
            return query.order_by(m.c.seq.desc()).limit(bindparam("muxi_last"))
        return query.order_by(m.c.seq)

    def count_messages(self, conn: Connection, scope: Scope, status: str | None) -> int:
        query = select(func.count()).select_from(self.t.messages)
        return int(conn.scalar(query.where(*self._messages(scope, status))) or 0)

    def delete_messages(self, conn: Connection, scope: Scope, status: str | None) -> int:
        return conn.execute(delete(self.t.messages).where(*self._messages(scope, status))).rowcount

    def delete_message(self, conn: Connection, scope: Scope, seq: int) -> Message | None:
        m = self.t.messages
        stmt = delete(m).where(*self._session(m, scope), m.c.seq == seq).returning(*m.c)
        row = conn.execute(stmt).first()
        return None if row is None else _row_to_message(row)

    def take_oldest(self, conn: Connection, scope: Scope, n: int, archive: bool) -> list[Message]:
        if n == 0:
            return []
        m = self.t.messages
        oldest = (
            select(m)
            .where(*self._messages(scope, ACTIVE))
            .order_by(m.c.seq)
            .limit(n)
            .with_for_update()
        )
        taken = [_row_to_message(row) for row in conn.execute(oldest)]
        if not taken:
            return []
        chosen = [*self._session(m, scope), m.c.seq.in_([t.seq for t in taken])]
        if archive:
            conn.execute(update(m).where(*chosen).values(status=ARCHIVED))
        else:
            conn.execute(delete(m).where(*chosen))
        return taken

    def restore_messages(
        self, conn: Connection, scope: Scope, messages: Sequence[Message]
    ) -> list[Message]:
        """The session's messages replaced by these, seqs kept; the counter moves past them."""
        m_table = self.t.messages
        conn.execute(delete(m_table).where(*self._session(m_table, scope)))
        if not messages:
            return []
        now = utc_now()
        stored = [replace(m, created_at=utc(m.created_at or now)) for m in messages]
        conn.execute(insert(m_table), [self._message_row(scope, m) for m in stored])
        top = max(m.seq or 0 for m in stored) + 1
        c = self.t.counters
        conn.execute(self._counter(scope, top, case((c.c.next_seq > top, c.c.next_seq), else_=top)))
        return stored

    def list_message_sessions(self, conn: Connection, user: Scope) -> list[str]:
        m = self.t.messages
        query = select(m.c.session_id).where(*self._user(m, user)).distinct()
        return sorted(str(sid) for sid in conn.scalars(query))
