"""A complete in-process backend: dicts keyed by scope, guarded by one lock.

Real, not a mock: it passes the same storage suite as the SQL backends, and is the
quickest way to run an app or a test. Nothing persists past the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import numpy.typing as npt

from ..audit import AuditEvent, AuditQuery, EventList
from ..errors import DuplicateRequest, SessionExists, SessionExpired, SessionNotFound
from ..filters import Filter, matches
from ..quotas import MEMORIES, SESSIONS, check_count
from ..records import ACTIVE, ARCHIVED, Memory, Message, Receipt, SessionRecord
from ..scope import Scope
from ._memory_graph import MemoryGraph
from .base import RECEIPT_WINDOW, Backend, Counts, Scored
from .keywords import overlap, words
from .similarity import best_first, cosines, mismatch, rank, row_norms

__all__ = ["MemoryBackend"]

UserKey = tuple[str, str]
SessionKey = tuple[str, str, str]
Vector = npt.NDArray[np.float64]


def _user_key(scope: Scope) -> UserKey:
    return (scope.tenant_id, scope.user_id)


@dataclass(frozen=True)
class _Kept:
    """A user's embedded memories with their vectors as one float64 matrix (``None`` when
    their lengths differ) and its rows' norms: made at a search, dropped by any write of
    the user's memories, so a search scores a matrix instead of converting every vector."""

    memories: list[Memory]
    matrix: Vector | None
    norms: Vector | None

    @classmethod
    def of(cls, memories: list[Memory]) -> _Kept:
        """From the user's memories in ``_matching``'s order."""
        embedded = [m for m in memories if m.embedding is not None]
        if len({len(m.embedding or ()) for m in embedded}) > 1:
            return cls(embedded, None, None)  # ``rank`` names the odd one out
        matrix = np.asarray([m.embedding for m in embedded], dtype=np.float64)
        return cls(embedded, matrix, row_norms(matrix) if embedded else None)


def _session_key(scope: Scope) -> SessionKey:
    assert scope.session_id is not None
    return (scope.tenant_id, scope.user_id, scope.session_id)


def _optional(**counts: int) -> Counts:
    """Counts of an optional kind, shown only when there were some (as on SQL)."""
    return {kind: n for kind, n in counts.items() if n}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class MemoryBackend(MemoryGraph, Backend):
    """Everything in dicts, per (tenant, user) and per session."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sessions: dict[UserKey, dict[str, SessionRecord]] = {}
        self._messages: dict[SessionKey, list[Message]] = {}
        self._next_seq: dict[SessionKey, int] = {}
        self._memories: dict[UserKey, dict[str, Memory]] = {}
        # Each user's vectors as one matrix, for search, until a write of their memories.
        self._kept: dict[UserKey, _Kept] = {}
        self._receipts: dict[UserKey, dict[str, Receipt]] = {}
        self._audit_events = EventList()  # never forgotten with a user: no content in it

    # -- the audit trail

    def _append_audit(self, event: AuditEvent) -> None:
        self._audit_events.append(event)

    def _read_audit(self, query: AuditQuery) -> list[AuditEvent]:
        return self._audit_events.read(query)

    def _prune_audit(self, before: datetime) -> int:
        return self._audit_events.prune(before)

    # -- sessions

    def _insert_session(self, record: SessionRecord, receipt: Receipt | None = None) -> None:
        with self._lock:
            sessions = self._sessions.setdefault(_user_key(record.scope), {})
            self._check_sessions(record.scope, sessions)
            if record.id in sessions:
                raise SessionExists(record.id)
            self._check_receipt(receipt)
            sessions[record.id] = record
            self._keep_receipt(receipt)

    def _check_sessions(self, user: Scope, sessions: dict[str, SessionRecord]) -> None:
        """Under the lock, before the write: one more session must fit the user's quota."""
        allowed = self.limits.for_tenant(user.tenant_id).max_sessions_per_user
        check_count(SESSIONS, allowed, lambda: len(sessions), 1)

    def _check_receipt(self, receipt: Receipt | None) -> None:
        """Under the lock, before any write: a fresh receipt under this key refuses it all."""
        if receipt is None:
            return
        assert receipt.scope is not None and receipt.created_at is not None
        held = self._receipts.get(_user_key(receipt.scope), {}).get(receipt.key)
        fresh = receipt.created_at - RECEIPT_WINDOW
        if held is not None and held.created_at is not None and held.created_at >= fresh:
            raise DuplicateRequest(receipt.key)

    def _keep_receipt(self, receipt: Receipt | None, stored: list[Message] | None = None) -> None:
        if receipt is not None:
            assert receipt.scope is not None
            seqs = tuple(m.seq for m in stored or () if m.seq is not None)
            kept = replace(receipt, seqs=seqs)
            self._receipts.setdefault(_user_key(receipt.scope), {})[receipt.key] = kept

    def _get_receipt(self, user: Scope, key: str) -> Receipt | None:
        with self._lock:
            return self._receipts.get(_user_key(user), {}).get(key)

    def _get_session(self, user: Scope, session_id: str) -> SessionRecord | None:
        with self._lock:
            return self._sessions.get(_user_key(user), {}).get(session_id)

    def _list_sessions(self, user: Scope) -> list[SessionRecord]:
        with self._lock:
            found = list(self._sessions.get(_user_key(user), {}).values())
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def _touch_session(
        self, user: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> bool:
        with self._lock:
            sessions = self._sessions.get(_user_key(user), {})
            if session_id not in sessions:
                return False
            sessions[session_id] = replace(
                sessions[session_id], last_active_at=last_active_at, expires_at=expires_at
            )
            return True

    def _delete_session(self, user: Scope, session_id: str) -> bool:
        with self._lock:
            key = (user.tenant_id, user.user_id, session_id)
            self._messages.pop(key, None)
            self._next_seq.pop(key, None)
            self._forget_graph_threads(user.tenant_id, [(user.user_id, session_id)])
            return self._sessions.get(_user_key(user), {}).pop(session_id, None) is not None

    # -- messages

    def _append_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        key = _session_key(scope)
        with self._lock:
            seq = self._next_seq.get(key, 1)
            now = _now()
            stored = [
                replace(m, seq=seq + i, created_at=m.created_at or now)
                for i, m in enumerate(messages)
            ]
            self._messages.setdefault(key, []).extend(stored)
            self._next_seq[key] = seq + len(stored)
            return stored

    def _renew_session(
        self, user: Scope, session_id: str, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        with self._lock:
            sessions = self._sessions.get(_user_key(user), {})
            record = sessions.get(session_id)
            if record is None or record.expired(now):
                return None
            sessions[session_id] = replace(record, last_active_at=now, expires_at=expires_at)
            return sessions[session_id]

    def _append_to_session(
        self,
        scope: Scope,
        messages: list[Message],
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None = None,
        receipt: Receipt | None = None,
    ) -> list[Message]:
        sid = scope.session_id
        assert sid is not None
        with self._lock:  # every check first: a refused turn writes nothing
            sessions = self._sessions.get(_user_key(scope), {})
            if create is not None:
                self._check_sessions(scope, sessions)
            if create is not None and sid in sessions:
                raise SessionExists(sid)
            record = create if create is not None else sessions.get(sid)
            if record is None or record.expired(now):
                raise SessionNotFound(sid) if record is None else SessionExpired(sid)
            self._check_receipt(receipt)
            renewed = replace(record, last_active_at=now, expires_at=expires_at)
            self._sessions.setdefault(_user_key(scope), {})[sid] = renewed
            stored = self._append_messages(scope, messages) if messages else []
            self._keep_receipt(receipt, stored)
            return stored

    def _replace_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        with self._lock:
            self._messages.pop(_session_key(scope), None)
            return self._append_messages(scope, messages) if messages else []

    def _selected(self, scope: Scope, status: str | None) -> list[Message]:
        rows = self._messages.get(_session_key(scope), [])
        return [m for m in rows if status is None or m.status == status]

    def _get_messages(
        self,
        scope: Scope,
        status: str | None,
        limit: int | None,
        offset: int | None,
        last: int | None,
    ) -> list[Message]:
        with self._lock:
            rows = self._selected(scope, status)
        if last is not None:
            return rows[max(0, len(rows) - last) :] if last else []
        start = offset or 0
        return rows[start : None if limit is None else start + limit]

    def _read_turn(
        self, user: Scope, session_id: str, last: int | None
    ) -> tuple[SessionRecord | None, list[Message]]:
        with self._lock:  # one hold: the record and its messages as they were together
            record = self._get_session(user, session_id)
            if record is None:
                return None, []
            return record, self._get_messages(user.with_session(session_id), None, None, None, last)

    def _count_messages(self, scope: Scope, status: str | None) -> int:
        with self._lock:
            return len(self._selected(scope, status))

    def _delete_messages(self, scope: Scope, status: str | None) -> int:
        key = _session_key(scope)
        with self._lock:
            rows = self._messages.get(key, [])
            kept = [m for m in rows if status is not None and m.status != status]
            self._messages[key] = kept
            return len(rows) - len(kept)

    def _delete_message(self, scope: Scope, seq: int) -> Message | None:
        with self._lock:
            rows = self._messages.get(_session_key(scope), [])
            for i, message in enumerate(rows):
                if message.seq == seq:
                    return rows.pop(i)
            return None

    def _take_oldest(self, scope: Scope, n: int, archive: bool) -> list[Message]:
        key = _session_key(scope)
        with self._lock:
            rows = self._messages.get(key, [])
            taken = [m for m in rows if m.status == ACTIVE][:n]
            seqs = {m.seq for m in taken}
            if archive:
                self._messages[key] = [
                    replace(m, status=ARCHIVED) if m.seq in seqs else m for m in rows
                ]
            else:
                self._messages[key] = [m for m in rows if m.seq not in seqs]
            return taken

    # -- memories

    def _upsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        now = _now()
        allowed = self.limits.for_tenant(scope.tenant_id).max_memories_per_user
        with self._lock:
            bucket = self._memories.setdefault(_user_key(scope), {})
            new = {m.id for m in memories} - bucket.keys()
            check_count(MEMORIES, allowed, lambda: len(bucket), len(new))
            for memory in memories:
                bucket[memory.id] = replace(memory, created_at=memory.created_at or now)
            self._kept.pop(_user_key(scope), None)
        return [m.id for m in memories]

    def _get_memories(self, user: Scope, ids: list[str]) -> list[Memory]:
        with self._lock:
            bucket = self._memories.get(_user_key(user), {})
            return [bucket[i] for i in dict.fromkeys(ids) if i in bucket]

    def _matching(self, user: Scope, node: Filter | None) -> list[Memory]:
        with self._lock:
            rows = list(self._memories.get(_user_key(user), {}).values())
        rows.sort(key=lambda m: (m.created_at or _now(), m.id))
        return [m for m in rows if matches(node, m.metadata)]

    def _list_memories(
        self, user: Scope, node: Filter | None, limit: int | None, offset: int | None
    ) -> list[Memory]:
        rows = self._matching(user, node)
        start = offset or 0
        return rows[start : None if limit is None else start + limit]

    def _count_memories(self, user: Scope, node: Filter | None) -> int:
        return len(self._matching(user, node))

    def _delete_memories(self, user: Scope, ids: list[str] | None, node: Filter | None) -> int:
        with self._lock:
            bucket = self._memories.get(_user_key(user), {})
            wanted = None if ids is None else set(ids)
            doomed = [m.id for m in self._matching(user, node) if wanted is None or m.id in wanted]
            for memory_id in doomed:
                del bucket[memory_id]
            self._kept.pop(_user_key(user), None)
            return len(doomed)

    def _search_memories(
        self, user: Scope, vector: list[float], k: int, node: Filter | None
    ) -> list[Scored]:
        key = _user_key(user)
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                kept = self._kept[key] = _Kept.of(self._matching(user, None))
        embedded = kept.memories
        if kept.matrix is None or kept.norms is None:
            found = [m for m in embedded if matches(node, m.metadata)]
            ranked = rank(vector, [m.embedding or [] for m in found], k, lambda i: found[i].id)
            return [(found[i], score) for i, score in ranked]
        if kept.matrix.shape[1] != len(vector):
            raise mismatch(kept.matrix.shape[1], len(vector))
        rows = np.arange(len(embedded))
        if node is not None:
            rows = np.flatnonzero([matches(node, m.metadata) for m in embedded])
        scores = cosines(vector, kept.matrix[rows], kept.norms[rows])
        best = best_first(scores, k, lambda j: embedded[rows[j]].id)
        return [(embedded[rows[j]], float(scores[j])) for j in best]

    def _search_text(self, user: Scope, query: str, k: int, node: Filter | None) -> list[Scored]:
        return overlap(words(query), self._matching(user, node), k)

    # -- maintenance

    def _forget_user(self, user: Scope) -> Counts:
        key = _user_key(user)
        with self._lock:
            sessions = self._sessions.pop(key, {})
            message_keys = [k for k in self._messages if k[:2] == key]
            messages = sum(len(self._messages.pop(k)) for k in message_keys)
            for k in message_keys:
                self._next_seq.pop(k, None)
            memories = len(self._memories.pop(key, {}))
            self._kept.pop(key, None)
            receipts = len(self._receipts.pop(key, {}))
        counts = {"sessions": len(sessions), "messages": messages, "memories": memories}
        return {**counts, **_optional(receipts=receipts), **self._forget_graph(user)}

    def _restore_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        key = _session_key(scope)
        now = _now()
        stored = [replace(m, created_at=m.created_at or now) for m in messages]
        with self._lock:
            self._messages.pop(key, None)
            if stored:
                self._messages[key] = stored
                top = max(m.seq or 0 for m in stored) + 1
                self._next_seq[key] = max(self._next_seq.get(key, 1), top)
        return stored

    def _list_message_sessions(self, user: Scope) -> list[str]:
        key = _user_key(user)
        with self._lock:
            return sorted(k[2] for k, rows in self._messages.items() if k[:2] == key and rows)

    def _forget_tenant(self, tenant_id: str) -> Counts:
        counts = {"sessions": 0, "messages": 0, "memories": 0}
        with self._lock:
            for key in [k for k in self._sessions if k[0] == tenant_id]:
                counts["sessions"] += len(self._sessions.pop(key))
            for skey in [k for k in self._messages if k[0] == tenant_id]:
                counts["messages"] += len(self._messages.pop(skey))
            for skey in [k for k in self._next_seq if k[0] == tenant_id]:
                del self._next_seq[skey]
            for key in [k for k in self._memories if k[0] == tenant_id]:
                counts["memories"] += len(self._memories.pop(key))
            for key in [k for k in self._kept if k[0] == tenant_id]:
                del self._kept[key]
            receipts = sum(
                len(self._receipts.pop(k)) for k in list(self._receipts) if k[0] == tenant_id
            )
        return {**counts, **_optional(receipts=receipts), **self._forget_graph_tenant(tenant_id)}

    def _list_tenants(self) -> list[str]:
        with self._lock:
            found = {k[0] for k, v in self._sessions.items() if v}
            found |= {k[0] for k, rows in self._messages.items() if rows}
            found |= {k[0] for k in self._next_seq}
            found |= {k[0] for k, v in self._memories.items() if v}
        return sorted(found | self._graph_tenants())

    def _purge_expired(self, tenant_id: str, before: datetime) -> Counts:
        with self._lock:
            doomed = [
                (user_id, sid)
                for (tenant, user_id), sessions in self._sessions.items()
                if tenant == tenant_id
                for sid, record in sessions.items()
                if record.expires_at <= before
            ]
            messages = 0
            for user_id, sid in doomed:
                key = (tenant_id, user_id, sid)
                messages += len(self._messages.pop(key, []))
                self._next_seq.pop(key, None)
                del self._sessions[(tenant_id, user_id)][sid]
            threads = self._forget_graph_threads(tenant_id, doomed)
        return {"sessions": len(doomed), "messages": messages, **threads}
