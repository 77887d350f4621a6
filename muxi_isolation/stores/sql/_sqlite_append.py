"""SQLite: an append to a session on the pooled DB-API connection itself.

The backend's one hot write (``append_to_session``, what every chat history's
``add_messages`` costs) spent more time in SQLAlchemy's execution of its five statements
than SQLite spent running them. Here the same statements, compiled once to SQLite's SQL,
run on the driver's cursor: the checks, their order and the transaction are the SQL path's
(``Transactions._run_on_driver`` opens it with ``BEGIN IMMEDIATE``; the pool still owns the
connection), only SQLAlchemy's per-statement machinery is gone. Every table is named with
its schema (``main``), as everywhere else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii  # what json.dumps runs for a str
from typing import Any

from sqlalchemy import (
    JSON,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from ...errors import DuplicateRequest, SessionExists, SessionExpired, SessionNotFound
from ...quotas import SESSIONS, check_count
from ...records import Message, Receipt, SessionRecord
from ...scope import Scope
from .._message_ops import AppendToSession
from ..base import RECEIPT_WINDOW
from ._driver import Driver, batch_sql, bind_processor, dialect_of
from ._ops_base import OpsBase, utc, utc_now
from ._types import UTCDateTime

__all__ = ["DriverAppend", "json_text", "numbered", "sqlite_processors", "sqlite_time"]

# The compiler of the driver statements: SQLite's SQL and bind processors are the same for
# the sync (pysqlite) and the async (aiosqlite) engine.
_SQLITE: Dialect = sqlite.dialect()

MESSAGE_KEYS = (
    "tenant_id",
    "user_id",
    "session_id",
    "seq",
    "role",
    "content",
    "metadata",
    "tool_calls",
    "status",
    "created_at",
)
_SESSION_KEYS = ("tenant_id", "user_id", "id", "created_at", "last_active_at", "expires_at")
_RECEIPT_KEYS = ("tenant_id", "user_id", "key", "request", "response", "seqs", "created_at")


def sqlite_time(value: datetime | None) -> str | None:
    """A ``UTCDateTime`` bound on SQLite, as SQLAlchemy's processors write it (naive UTC,
    always six digits of microseconds), at a tenth of their cost."""
    if value is None:
        return None
    if value.tzinfo is not None and value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat(" ", "microseconds")[:26]  # without a UTC offset


# json.dumps's own C encoder with its default settings, made once: json.dumps makes one per
# call (two thirds of its cost for a small dict). No cycle check: on any error the value
# goes to json.dumps, which raises as it always does.
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)  # None without the C module
_ENCODER = _MAKE_ENCODER and _MAKE_ENCODER(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def json_text(value: Any) -> str:
    """``json.dumps(value)``, SQLAlchemy's JSON processor on SQLite, without the json
    module's per-call setup for a message's usual values (a text, no metadata, no calls)."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is dict or kind is list:
        if not value:
            return "{}" if kind is dict else "[]"
        if _ENCODER is not None:
            try:
                return "".join(_ENCODER(value, 0))
            except Exception:  # noqa: S110  (json.dumps below raises its own error)
                pass
    return json.dumps(value)


def sqlite_processors(kind: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The driver statements' bind processors: SQLAlchemy's, but ``sqlite_time`` and
    ``json_text`` for their types (a test keeps each equal to SQLAlchemy's)."""
    if isinstance(kind, UTCDateTime):
        return sqlite_time
    if isinstance(kind, JSON):
        return json_text
    return bind_processor(kind, dialect)


def numbered(m: Message, seq: int, created_at: datetime) -> Message:
    """``replace(m, seq=seq, created_at=created_at)`` at a quarter of its cost (it reads the
    dataclass's fields on every call); a test keeps the two equal as ``Message`` changes."""
    return Message(m.role, m.content, m.metadata, m.tool_calls, m.status, created_at, seq, m.scope)


class DriverAppend(OpsBase):
    """The append's statements, shared by the SQLAlchemy path (``HistoryOps``) and run here
    on a DB-API connection (SQLite)."""

    def append_on_driver(self, db: Any, turn: AppendToSession) -> list[Message]:
        """``HistoryOps.append_to_session`` on SQLite's DB-API connection ``db`` (sqlite3's,
        or the aiosqlite adapter's), in the caller's write transaction: the same statements
        in the same order (create, touch if active, the seq counter, the insert, the
        receipt), the same answers and errors."""
        scope, now = turn.scope, turn.now
        cur = db.cursor()
        try:
            if turn.create is not None:
                self._create_on(cur, turn.create)
            touch, reserve = self._once("sqlite:append", self._append_sql)
            t, u, sid = scope.tenant_id, scope.user_id, scope.session_id
            at = sqlite_time(now)  # the touch's last-active and active-at times: one text
            cur.execute(touch, (at, sqlite_time(turn.expires_at), t, u, sid, at))
            if cur.rowcount <= 0:  # off the cursor: the aiosqlite adapter's execute is None
                self._refuse_on(cur, scope)
            stored: list[Message] = []
            if turn.messages:
                n = len(turn.messages)
                cur.execute(reserve, (t, u, sid, n + 1, n))
                first = int(cur.fetchone()[0]) - n
                stored = self._numbered(turn.messages, first)
                cur.executemany(*self._message_batch(_SQLITE, scope, stored))
            if turn.receipt is not None:
                self._receipt_on(cur, turn.receipt, stored)
            return stored
        finally:
            cur.close()

    def _append_sql(self) -> tuple[str, str]:
        """The touch (only if active) and the seq reservation as SQLite's SQL, their
        parameters in the order the append binds them: (last-active, expires, tenant, user,
        session, active-at) and (tenant, user, session, first, n)."""
        name = _SQLITE.identifier_preparer.format_table
        sessions, counters = name(self.t.sessions), name(self.t.counters)
        touch = (
            f"UPDATE {sessions} SET last_active_at = ?, expires_at = ? "  # noqa: S608
            "WHERE tenant_id = ? AND user_id = ? AND id = ? AND expires_at > ?"
        )
        reserve = (
            f"INSERT INTO {counters} (tenant_id, user_id, session_id, next_seq) "  # noqa: S608
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, user_id, session_id) "
            f"DO UPDATE SET next_seq = {counters}.next_seq + ? RETURNING next_seq"
        )
        return touch, reserve

    def _on_driver(self, name: str, build: Callable[[], Any]) -> Driver:
        driver: Driver = self._once(
            f"sqlite:{name}", lambda: Driver.of(_SQLITE, build(), sqlite_processors)
        )
        return driver

    def _refuse_on(self, cur: Any, scope: Scope) -> None:
        """The touch found no active session: say whether it is expired or not this user's."""
        s = self.t.sessions
        exists = self._on_driver(
            "session_exists",
            lambda: select(literal_column("1")).where(
                s.c.tenant_id == bindparam("muxi_tenant"),
                s.c.user_id == bindparam("muxi_user"),
                s.c.id == bindparam("muxi_id"),
            ),
        )
        sid = str(scope.session_id)
        params = {"muxi_tenant": scope.tenant_id, "muxi_user": scope.user_id, "muxi_id": sid}
        found = exists.on(cur, params).fetchone() is not None
        raise SessionExpired(sid) if found else SessionNotFound(sid)

    def _create_on(self, cur: Any, record: SessionRecord) -> None:
        """``HistoryOps.insert_session``: the user's session quota, then the row."""
        s, user = self.t.sessions, record.scope
        allowed = self.limits.for_tenant(user.tenant_id).max_sessions_per_user
        if allowed is not None:
            count = self._on_driver(
                "count_sessions",
                lambda: (
                    select(func.count())
                    .select_from(s)
                    .where(
                        s.c.tenant_id == bindparam("muxi_tenant"),
                        s.c.user_id == bindparam("muxi_user"),
                    )
                ),
            )
            params = {"muxi_tenant": user.tenant_id, "muxi_user": user.user_id}
            check_count(SESSIONS, allowed, lambda: int(count.on(cur, params).fetchone()[0]), 1)
        row = {
            "tenant_id": user.tenant_id,
            "user_id": user.user_id,
            "id": record.id,
            "created_at": record.created_at,
            "last_active_at": record.last_active_at,
            "expires_at": record.expires_at,
        }
        try:
            cur.execute(*self._row(s, _SESSION_KEYS, row))
        except sqlite3.IntegrityError as exc:  # aiosqlite raises sqlite3's own classes
            raise SessionExists(record.id) from exc

    def _receipt_on(self, cur: Any, receipt: Receipt, stored: Sequence[Message]) -> None:
        """``HistoryOps.put_receipt``: a stale receipt of the key goes; a fresh one refuses
        the whole transaction (``DuplicateRequest``)."""
        r, user = self.t.receipts, receipt.scope
        assert r is not None and user is not None and receipt.created_at is not None
        stale = self._on_driver(
            "stale_receipt",
            lambda: delete(r).where(
                r.c.tenant_id == bindparam("muxi_tenant"),
                r.c.user_id == bindparam("muxi_user"),
                r.c.key == bindparam("muxi_key"),
                r.c.created_at < bindparam("muxi_stale", type_=r.c.created_at.type),
            ),
        )
        params = {
            "muxi_tenant": user.tenant_id,
            "muxi_user": user.user_id,
            "muxi_key": receipt.key,
            "muxi_stale": receipt.created_at - RECEIPT_WINDOW,
        }
        stale.on(cur, params)
        row = {
            "tenant_id": user.tenant_id,
            "user_id": user.user_id,
            "key": receipt.key,
            "request": receipt.request,
            "response": receipt.response,
            "seqs": [m.seq for m in stored],
            "created_at": receipt.created_at,
        }
        try:
            cur.execute(*self._row(r, _RECEIPT_KEYS, row))
        except sqlite3.IntegrityError as exc:
            raise DuplicateRequest(receipt.key) from exc

    def _row(self, table: Any, keys: tuple[str, ...], row: dict[str, Any]) -> tuple[str, Any]:
        """One row's insert into ``table`` as the driver's SQL and parameters."""
        sql, columns = self._once(
            f"sqlite:insert:{table.name}",
            lambda: batch_sql(_SQLITE, insert(table), table, keys, sqlite_processors),
        )
        return sql, tuple(row[n] if p is None else p(row[n]) for n, p in columns)

    # -- shared with the SQLAlchemy path (``HistoryOps``)

    @staticmethod
    def _numbered(messages: Sequence[Message], first: int) -> list[Message]:
        """The messages as stored: seqs from ``first`` on, a time if they had none."""
        now = utc_now()
        return [numbered(m, first + i, utc(m.created_at or now)) for i, m in enumerate(messages)]

    def _message_batch(
        self, conn: Any, scope: Scope, stored: Sequence[Message]
    ) -> tuple[str, list[tuple[Any, ...]]]:
        """SQLite's insert of the messages as the driver's SQL and one parameter tuple each
        (SQLAlchemy's parameter handling was a third of the insert)."""
        sql = self._once("sqlite:insert_messages", lambda: self._message_sql(dialect_of(conn)))
        t, u, s = scope.tenant_id, scope.user_id, scope.session_id
        rows, last, at = [], None, None
        for m in stored:
            if m.created_at is not last:  # a batch's messages share their time: one text
                last, at = m.created_at, sqlite_time(m.created_at)
            data = json_text(m.content), json_text(m.metadata), json_text(m.tool_calls)
            rows.append((t, u, s, m.seq, m.role, *data, m.status, at))
        return sql, rows

    def _message_sql(self, dialect: Dialect) -> str:
        """The messages' insert; ``_message_batch`` builds each row in ``MESSAGE_KEYS``'
        order, which must be the driver's (checked once, here)."""
        t = self.t.messages
        sql, columns = batch_sql(dialect, insert(t), t, MESSAGE_KEYS)
        assert tuple(name for name, _ in columns) == MESSAGE_KEYS, columns
        return sql

    @staticmethod
    def _message_row(scope: Scope, m: Message) -> dict[str, Any]:
        return {
            "tenant_id": scope.tenant_id,
            "user_id": scope.user_id,
            "session_id": scope.session_id,
            "seq": m.seq,
            "role": m.role,
            "content": m.content,
            "metadata": m.metadata,
            "tool_calls": m.tool_calls,
            "status": m.status,
            "created_at": m.created_at,
        }
