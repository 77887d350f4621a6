"""The storage protocol every backend implements, with the policy wired in once.

A backend subclasses ``Backend`` and implements the underscored methods (``_get_messages``,
``_aget_messages``, ...): each receives a scope that has already been checked, must filter
by it with equality on separate tenant, user and session fields, and returns records that
carry their stored scope. The public methods, written here once, fail closed on a missing
scope, stamp every write, validate every caller filter and verify every returned record,
so no backend can forget to.

Sync and async twins: ``get_messages`` and ``aget_messages``, and so on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias

from .. import policy
from .._input import INT64_MAX, check_int, check_text
from ..audit import NO_AUDIT, AuditEvent, Auditor, AuditQuery, instrument
from ..errors import InvalidIdentifier, InvalidInput
from ..filters import And, Compare, Filter, Not, Or, check_filter
from ..quotas import NO_LIMITS, Limits, check_messages
from ..records import Memory, Message, Receipt, SessionRecord
from ..scope import Scope, canonical_id
from .graph import GraphMethods
from .keywords import fuse, words

__all__ = ["RECEIPT_WINDOW", "SEARCH_MODES", "Backend", "Counts", "FilterSpec", "Scored"]

FilterSpec: TypeAlias = "Mapping[str, Any] | Filter | None"
Scored: TypeAlias = "tuple[Memory, float]"
Counts: TypeAlias = "dict[str, int]"
RECEIPT_WINDOW = timedelta(hours=24)  # how long a retry with the same key is a replay
SEARCH_MODES = ("vector", "text", "hybrid")


# Input checks: every one raises ``InvalidInput`` (a ``ValueError``) before the backend is
# called, so memory, SQLite and PostgreSQL refuse the same values the same way.


def _check_window(limit: int | None, offset: int | None, last: int | None) -> None:
    for name, value in (("limit", limit), ("offset", offset), ("last", last)):
        if value is not None:
            check_int(value, name, minimum=0)  # 64 bits: what SQLite and PostgreSQL bind
    if last is not None and (limit is not None or offset is not None):
        raise InvalidInput("last cannot be combined with limit or offset", field="last")


def _check_k(k: int, name: str = "k") -> None:
    check_int(k, name, minimum=0)


def _check_status(status: str | None) -> None:
    if status is not None:
        check_text(status, "status")


def _check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str):
        raise InvalidIdentifier("session_id", f"must be a string, not {type(session_id).__name__}")
    try:
        return check_text(session_id, "session_id")
    except InvalidInput as exc:  # the id's own error, as the canonical form gives it
        raise InvalidIdentifier("session_id", str(exc).removeprefix("session_id ")) from None


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):  # a lone id would be read as its characters
        raise InvalidInput("ids must be a list of strings, not one string", field="ids")
    return [check_text(i, "ids") for i in ids]


def _receipt(scope: Scope, receipt: Receipt | None) -> Receipt | None:
    """The receipt stamped for the user, with its time; its key in the canonical form."""
    if receipt is None:
        return None
    key = canonical_id(receipt.key, "idempotency_key")
    now = receipt.created_at or datetime.now(timezone.utc)
    return policy.stamp(scope, replace(receipt, key=key, created_at=now))


def _check_message(message: Message) -> Message:
    check_text(message.role, "role")
    check_text(message.status, "status")
    return message


def _check_memory(memory: Memory) -> Memory:
    check_text(memory.id, "memory id")
    check_text(memory.content, "memory content")
    if memory.embedding is not None:
        _vector(memory.embedding)
    return memory


def _filter(spec: FilterSpec) -> Filter | None:
    if isinstance(spec, (Compare, And, Or, Not)):
        spec = check_filter(spec)  # a tree built by hand gets the parser's checks
    return policy.read_filter(spec)


def _delete_filter(spec: FilterSpec) -> Filter | None:
    """No filter deletes everything, as documented; a filter given that matches everything
    (``{}``, an always-true tree) is a mistake, refused as in every adapter."""
    if spec is None:
        return None
    if isinstance(spec, (Compare, And, Or, Not)):
        spec = check_filter(spec)
    return policy.delete_filter(spec)


def _fresh(found: list[Receipt]) -> Receipt | None:
    """A receipt still inside its window (an older one no longer replays)."""
    if not found or found[0].created_at is None:
        return None
    oldest = datetime.now(timezone.utc) - RECEIPT_WINDOW
    return found[0] if found[0].created_at >= oldest else None


def _search_plan(
    embedding: Sequence[float] | None,
    text: str | None,
    mode: str,
    alpha: float,
    k: int,
    text_k: int | None,
) -> tuple[list[float] | None, str | None, int]:
    """Checked search arguments: (the vector to rank by, the text to rank by, the text
    ranking's depth); each ``None`` when the mode does not rank by it."""
    _check_k(k)
    if mode not in SEARCH_MODES:
        raise InvalidInput(f"mode must be one of {', '.join(SEARCH_MODES)}", field="mode")
    if mode == "vector" and text is not None:
        raise InvalidInput("text ranks only in mode 'text' or 'hybrid'", field="text")
    if mode != "vector" and (text is None or not words(check_text(text, "text"))):
        raise InvalidInput(f"mode {mode!r} needs a text with at least one word", field="text")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InvalidInput("alpha must be a number from 0 to 1", field="alpha")
    if text_k is not None:
        _check_k(text_k, "text_k")
    if mode == "text":
        return None, text, k if text_k is None else text_k
    if embedding is None:
        raise InvalidInput(f"mode {mode!r} needs an embedding", field="embedding")
    return _vector(embedding), text, k if text_k is None else text_k


def _verify_scored(scope: Scope, hits: list[Scored]) -> list[Scored]:
    kept = {id(m) for m in policy.verify(scope, [m for m, _ in hits])}
    return [(m, s) for m, s in hits if id(m) in kept]


def _ranked(
    scope: Scope, mode: str, by_vector: list[Scored], by_text: list[Scored], k: int, alpha: float
) -> list[Scored]:
    """Each ranking verified as the caller's, then the mode's answer."""
    by_vector, by_text = _verify_scored(scope, by_vector), _verify_scored(scope, by_text)
    if mode == "vector":
        return by_vector
    if mode == "text":
        return by_text[:k]
    return fuse(by_vector, by_text, k, float(alpha))


class Backend(GraphMethods):
    """Sessions, chat messages and memories, each read and write scoped.

    Agent-graph checkpoints and store items (``graph.GraphMethods``) are scoped the same way.

    Memories are read at the user level; messages at the session level.

    ``limits`` (set by ``Isolation.from_config``) bounds each (tenant, user): message sizes
    are checked here before any write, counts by the backend inside the write's transaction.
    """

    limits: Limits = NO_LIMITS
    audit: Auditor = NO_AUDIT  # ``audit.Auditor``: the config's when opened from one

    def _stamped(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        stamped = [policy.stamp(scope, _check_message(m)) for m in messages]
        check_messages(self.limits, scope.tenant_id, stamped)
        return stamped

    # -- sessions ---------------------------------------------------------------------

    def insert_session(
        self, scope: Scope, record: SessionRecord, *, receipt: Receipt | None = None
    ) -> SessionRecord:
        """Store a new session; with a ``receipt``, in the same transaction (its key already
        stored for this user: ``DuplicateRequest``, and nothing is written)."""
        _check_session_id(record.id)
        record = policy.stamp(scope, record)
        self._insert_session(record, _receipt(scope, receipt))
        return record

    async def ainsert_session(
        self, scope: Scope, record: SessionRecord, *, receipt: Receipt | None = None
    ) -> SessionRecord:
        _check_session_id(record.id)
        record = policy.stamp(scope, record)
        await self._ainsert_session(record, _receipt(scope, receipt))
        return record

    def get_receipt(self, scope: Scope, key: str) -> Receipt | None:
        """The user's receipt for an idempotency key, if stored within ``RECEIPT_WINDOW``."""
        user = policy.require_scope(scope).user()
        found = self._get_receipt(user, canonical_id(key, "idempotency_key"))
        return _fresh(policy.verify(scope, [found] if found else []))

    async def aget_receipt(self, scope: Scope, key: str) -> Receipt | None:
        user = policy.require_scope(scope).user()
        found = await self._aget_receipt(user, canonical_id(key, "idempotency_key"))
        return _fresh(policy.verify(scope, [found] if found else []))

    def get_session(self, scope: Scope, session_id: str) -> SessionRecord | None:
        found = self._get_session(policy.require_scope(scope).user(), _check_session_id(session_id))
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    async def aget_session(self, scope: Scope, session_id: str) -> SessionRecord | None:
        found = await self._aget_session(
            policy.require_scope(scope).user(), _check_session_id(session_id)
        )
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    def list_sessions(self, scope: Scope) -> list[SessionRecord]:
        return policy.verify(scope, self._list_sessions(policy.require_scope(scope).user()))

    async def alist_sessions(self, scope: Scope) -> list[SessionRecord]:
        user = policy.require_scope(scope).user()
        return policy.verify(scope, await self._alist_sessions(user))

    def touch_session(
        self, scope: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> bool:
        user = policy.require_scope(scope).user()
        return self._touch_session(user, _check_session_id(session_id), last_active_at, expires_at)

    async def atouch_session(
        self, scope: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> bool:
        user = policy.require_scope(scope).user()
        return await self._atouch_session(
            user, _check_session_id(session_id), last_active_at, expires_at
        )

    def renew_session(
        self, scope: Scope, session_id: str, *, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        """Extend the session if it is still active at ``now``, in one transaction, and
        return it as renewed; ``None`` if this user has no such active session."""
        user = policy.require_scope(scope).user()
        found = self._renew_session(user, _check_session_id(session_id), now, expires_at)
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    async def arenew_session(
        self, scope: Scope, session_id: str, *, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        user = policy.require_scope(scope).user()
        found = await self._arenew_session(user, _check_session_id(session_id), now, expires_at)
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    def delete_session(self, scope: Scope, session_id: str) -> bool:
        """Delete a session record and its messages; the user's memories stay."""
        return self._delete_session(
            policy.require_scope(scope).user(), _check_session_id(session_id)
        )

    async def adelete_session(self, scope: Scope, session_id: str) -> bool:
        return await self._adelete_session(
            policy.require_scope(scope).user(), _check_session_id(session_id)
        )

    # -- messages (scope must name a session) -------------------------------------------

    def append_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        """Append in one transaction (all or nothing); returns them with ``seq`` set."""
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, messages)
        return policy.verify(scope, self._append_messages(scope, stamped)) if stamped else []

    async def aappend_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, messages)
        if not stamped:
            return []
        return policy.verify(scope, await self._aappend_messages(scope, stamped))

    def replace_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        """Delete the session's messages and write these instead, in one transaction."""
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, messages)
        return policy.verify(scope, self._replace_messages(scope, stamped))

    async def areplace_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, messages)
        return policy.verify(scope, await self._areplace_messages(scope, stamped))

    def append_to_session(
        self,
        scope: Scope,
        messages: Sequence[Message],
        *,
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None = None,
        receipt: Receipt | None = None,
    ) -> list[Message]:
        """Append to a session that is active at ``now`` and push its expiry to
        ``expires_at``, in one transaction: a session deleted, expired or purged while the
        caller was busy gets nothing. ``SessionNotFound`` or ``SessionExpired`` otherwise.

        ``create``: the scope's session, new, stored first in the same transaction.
        ``receipt``: stored in the same transaction (``DuplicateRequest`` if its key is).
        """
        scope, session, stamped = self._turn(scope, messages, create)
        rows = self._append_to_session(
            scope, stamped, now, expires_at, session, _receipt(scope, receipt)
        )
        return policy.verify(scope, rows)

    async def aappend_to_session(
        self,
        scope: Scope,
        messages: Sequence[Message],
        *,
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None = None,
        receipt: Receipt | None = None,
    ) -> list[Message]:
        scope, session, stamped = self._turn(scope, messages, create)
        rows = await self._aappend_to_session(
            scope, stamped, now, expires_at, session, _receipt(scope, receipt)
        )
        return policy.verify(scope, rows)

    def _turn(
        self, scope: Scope, messages: Sequence[Message], create: SessionRecord | None
    ) -> tuple[Scope, SessionRecord | None, list[Message]]:
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, messages)
        if create is None:
            return scope, None, stamped
        if _check_session_id(create.id) != scope.session_id:
            raise InvalidInput("create must be the scope's own session", field="create")
        return scope, policy.stamp(scope, create), stamped

    def get_messages(
        self,
        scope: Scope,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        last: int | None = None,
    ) -> list[Message]:
        """Messages oldest first; ``last=N`` gives the newest N, still oldest first."""
        policy.require_scope(scope, session=True)
        _check_window(limit, offset, last)
        _check_status(status)
        rows = self._get_messages(scope, status=status, limit=limit, offset=offset, last=last)
        return policy.verify(scope, rows)

    async def aget_messages(
        self,
        scope: Scope,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        last: int | None = None,
    ) -> list[Message]:
        policy.require_scope(scope, session=True)
        _check_window(limit, offset, last)
        _check_status(status)
        rows = await self._aget_messages(
            scope, status=status, limit=limit, offset=offset, last=last
        )
        return policy.verify(scope, rows)

    def count_messages(self, scope: Scope, *, status: str | None = None) -> int:
        _check_status(status)
        return self._count_messages(policy.require_scope(scope, session=True), status=status)

    async def acount_messages(self, scope: Scope, *, status: str | None = None) -> int:
        _check_status(status)
        scope = policy.require_scope(scope, session=True)
        return await self._acount_messages(scope, status=status)

    def delete_messages(self, scope: Scope, *, status: str | None = None) -> int:
        _check_status(status)
        return self._delete_messages(policy.require_scope(scope, session=True), status=status)

    async def adelete_messages(self, scope: Scope, *, status: str | None = None) -> int:
        _check_status(status)
        scope = policy.require_scope(scope, session=True)
        return await self._adelete_messages(scope, status=status)

    def delete_message(self, scope: Scope, seq: int) -> Message | None:
        check_int(seq, "seq")
        found = self._delete_message(policy.require_scope(scope, session=True), seq)
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    async def adelete_message(self, scope: Scope, seq: int) -> Message | None:
        check_int(seq, "seq")
        found = await self._adelete_message(policy.require_scope(scope, session=True), seq)
        return next(iter(policy.verify(scope, [found] if found else [])), None)

    def take_oldest(self, scope: Scope, n: int, *, archive: bool) -> list[Message]:
        """Remove the oldest ``n`` active messages (or mark them archived); return them."""
        _check_k(n, "n")
        rows = self._take_oldest(policy.require_scope(scope, session=True), n, archive=archive)
        return policy.verify(scope, rows)

    async def atake_oldest(self, scope: Scope, n: int, *, archive: bool) -> list[Message]:
        _check_k(n, "n")
        scope = policy.require_scope(scope, session=True)
        return policy.verify(scope, await self._atake_oldest(scope, n, archive=archive))

    # -- memories (read at the user level) -----------------------------------------------

    def upsert_memories(self, scope: Scope, memories: Sequence[Memory]) -> list[str]:
        """Insert, or replace this user's memories with the same ids, in one transaction."""
        scope = policy.require_scope(scope)
        stamped = [policy.stamp(scope, _check_memory(m)) for m in memories]
        return self._upsert_memories(scope, stamped) if stamped else []

    async def aupsert_memories(self, scope: Scope, memories: Sequence[Memory]) -> list[str]:
        scope = policy.require_scope(scope)
        stamped = [policy.stamp(scope, _check_memory(m)) for m in memories]
        return await self._aupsert_memories(scope, stamped) if stamped else []

    def get_memories(self, scope: Scope, ids: Sequence[str]) -> list[Memory]:
        """This user's memories among ``ids``; another user's id is simply missing."""
        user = policy.require_scope(scope).user()
        return policy.verify(scope, self._get_memories(user, _check_ids(ids))) if ids else []

    async def aget_memories(self, scope: Scope, ids: Sequence[str]) -> list[Memory]:
        user = policy.require_scope(scope).user()
        found = await self._aget_memories(user, _check_ids(ids)) if ids else []
        return policy.verify(scope, found)

    def list_memories(
        self,
        scope: Scope,
        *,
        filter: FilterSpec = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Memory]:
        """This user's memories, oldest first (then by id)."""
        user = policy.require_scope(scope).user()
        _check_window(limit, offset, None)
        node = _filter(filter)
        return policy.verify(scope, self._list_memories(user, node, limit, offset))

    async def alist_memories(
        self,
        scope: Scope,
        *,
        filter: FilterSpec = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Memory]:
        user = policy.require_scope(scope).user()
        _check_window(limit, offset, None)
        node = _filter(filter)
        return policy.verify(scope, await self._alist_memories(user, node, limit, offset))

    def count_memories(self, scope: Scope, *, filter: FilterSpec = None) -> int:
        user = policy.require_scope(scope).user()
        return self._count_memories(user, _filter(filter))

    async def acount_memories(self, scope: Scope, *, filter: FilterSpec = None) -> int:
        user = policy.require_scope(scope).user()
        return await self._acount_memories(user, _filter(filter))

    def delete_memories(
        self, scope: Scope, *, ids: Sequence[str] | None = None, filter: FilterSpec = None
    ) -> int:
        """Delete this user's memories by id and/or filter; neither means all of them (a
        filter that matches everything is refused: ``InvalidFilter``)."""
        user = policy.require_scope(scope).user()
        node = _delete_filter(filter)
        return self._delete_memories(user, None if ids is None else _check_ids(ids), node)

    async def adelete_memories(
        self, scope: Scope, *, ids: Sequence[str] | None = None, filter: FilterSpec = None
    ) -> int:
        user = policy.require_scope(scope).user()
        node = _delete_filter(filter)
        return await self._adelete_memories(user, None if ids is None else _check_ids(ids), node)

    def search_memories(
        self,
        scope: Scope,
        embedding: Sequence[float] | None,
        k: int = 4,
        *,
        filter: FilterSpec = None,
        text: str | None = None,
        mode: str = "vector",
        alpha: float = 0.5,
        text_k: int | None = None,
    ) -> list[Scored]:
        """The ``k`` memories most similar to ``embedding``, with cosine similarity.

        Always ``min(k, matching memories with an embedding)`` results, best first.

        ``mode="text"``: ranked by ``text``'s words alone (full-text search; ``embedding``
        may be ``None``), the backend's keyword score. ``mode="hybrid"``: the vector ranking
        and the top ``text_k`` (default ``k``) of the keyword ranking fused by reciprocal
        rank, ``alpha`` weighting the vector side (1: vector only, 0: keywords only); the
        fused score; ``min(k, memories matching either)`` results. ``filter`` applies to both.
        """
        user = policy.require_scope(scope).user()
        vector, query, depth = _search_plan(embedding, text, mode, alpha, k, text_k)
        node = _filter(filter)
        by_vector = [] if vector is None else self._search_memories(user, vector, k, node)
        by_text = [] if query is None else self._search_text(user, query, depth, node)
        return _ranked(scope, mode, by_vector, by_text, k, alpha)

    async def asearch_memories(
        self,
        scope: Scope,
        embedding: Sequence[float] | None,
        k: int = 4,
        *,
        filter: FilterSpec = None,
        text: str | None = None,
        mode: str = "vector",
        alpha: float = 0.5,
        text_k: int | None = None,
    ) -> list[Scored]:
        user = policy.require_scope(scope).user()
        vector, query, depth = _search_plan(embedding, text, mode, alpha, k, text_k)
        node = _filter(filter)
        by_vector = [] if vector is None else await self._asearch_memories(user, vector, k, node)
        by_text = [] if query is None else await self._asearch_text(user, query, depth, node)
        return _ranked(scope, mode, by_vector, by_text, k, alpha)

    # -- maintenance (the admin's, not an end user's) ----------------------------------------
    # Never wired to an end user's request. The per-user ones act inside one user's scope
    # (on PostgreSQL, under that user's row-level security); the tenant-wide ones take the
    # backend's admin path (the tables' owner, ``admin_url``, on PostgreSQL).

    def forget_user(self, scope: Scope) -> Counts:
        """Delete every row of this (tenant, user) in every table; counts by kind."""
        return self._forget_user(policy.require_scope(scope).user())

    async def aforget_user(self, scope: Scope) -> Counts:
        return await self._aforget_user(policy.require_scope(scope).user())

    def restore_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        """Replace the session's messages with these as they were: ``seq``, ``status`` and
        ``created_at`` kept (imports, restores). One transaction.

        Every message needs a distinct positive ``seq``; the session's counter moves past
        the highest, so a later append never reuses one.
        """
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, _check_seqs(messages))
        return policy.verify(scope, self._restore_messages(scope, stamped))

    async def arestore_messages(self, scope: Scope, messages: Sequence[Message]) -> list[Message]:
        scope = policy.require_scope(scope, session=True)
        stamped = self._stamped(scope, _check_seqs(messages))
        return policy.verify(scope, await self._arestore_messages(scope, stamped))

    def list_message_sessions(self, scope: Scope) -> list[str]:
        """Ids of this user's sessions that hold messages, record or not (sorted)."""
        return self._list_message_sessions(policy.require_scope(scope).user())

    async def alist_message_sessions(self, scope: Scope) -> list[str]:
        return await self._alist_message_sessions(policy.require_scope(scope).user())

    def forget_tenant(self, tenant_id: str) -> Counts:
        """Delete every row of one tenant in every table (admin path); counts by kind."""
        return self._forget_tenant(_tenant(tenant_id))

    async def aforget_tenant(self, tenant_id: str) -> Counts:
        return await self._aforget_tenant(_tenant(tenant_id))

    def list_tenants(self) -> list[str]:
        """Every tenant holding a row in any table, sorted (admin path)."""
        return self._list_tenants()

    async def alist_tenants(self) -> list[str]:
        return await self._alist_tenants()

    def purge_expired(self, before: datetime, *, tenant_id: str | None = None) -> Counts:
        """Delete the sessions that expired at or before ``before`` (admin path).

        Each goes whole: its record, its messages and anything else kept per session (an
        expired session can never be written again, so an empty record would only list a
        dead conversation). The users' memories stay: they outlive sessions. ``tenant_id``
        limits the purge to one tenant. Counts by kind (``sessions``, ``messages``, ...).
        """
        moment = _aware(before)
        tenants = [_tenant(tenant_id)] if tenant_id is not None else self._list_tenants()
        total: Counts = {"sessions": 0, "messages": 0}
        for tenant in tenants:
            _add(total, self._purge_expired(tenant, moment))
        return total

    async def apurge_expired(self, before: datetime, *, tenant_id: str | None = None) -> Counts:
        moment = _aware(before)
        tenants = [_tenant(tenant_id)] if tenant_id is not None else await self._alist_tenants()
        total: Counts = {"sessions": 0, "messages": 0}
        for tenant in tenants:
            _add(total, await self._apurge_expired(tenant, moment))
        return total

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    async def aclose(self) -> None:
        self.close()

    # -- what a backend implements ---------------------------------------------------------
    # Each receives a checked scope (user level where noted above) and filters by it.

    def _insert_session(self, record: SessionRecord, receipt: Receipt | None) -> None:
        raise NotImplementedError("_insert_session")

    async def _ainsert_session(self, record: SessionRecord, receipt: Receipt | None) -> None:
        raise NotImplementedError("_ainsert_session")

    def _get_receipt(self, user: Scope, key: str) -> Receipt | None:
        raise NotImplementedError("_get_receipt")

    async def _aget_receipt(self, user: Scope, key: str) -> Receipt | None:
        raise NotImplementedError("_aget_receipt")

    def _get_session(self, user: Scope, session_id: str) -> SessionRecord | None:
        raise NotImplementedError("_get_session")

    async def _aget_session(self, user: Scope, session_id: str) -> SessionRecord | None:
        raise NotImplementedError("_aget_session")

    def _list_sessions(self, user: Scope) -> list[SessionRecord]:
        raise NotImplementedError("_list_sessions")

    async def _alist_sessions(self, user: Scope) -> list[SessionRecord]:
        raise NotImplementedError("_alist_sessions")

    def _touch_session(
        self, user: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> bool:
        raise NotImplementedError("_touch_session")

    async def _atouch_session(
        self, user: Scope, session_id: str, last_active_at: datetime, expires_at: datetime
    ) -> bool:
        raise NotImplementedError("_atouch_session")

    def _renew_session(
        self, user: Scope, session_id: str, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        raise NotImplementedError("_renew_session")

    async def _arenew_session(
        self, user: Scope, session_id: str, now: datetime, expires_at: datetime
    ) -> SessionRecord | None:
        raise NotImplementedError("_arenew_session")

    def _delete_session(self, user: Scope, session_id: str) -> bool:
        raise NotImplementedError("_delete_session")

    async def _adelete_session(self, user: Scope, session_id: str) -> bool:
        raise NotImplementedError("_adelete_session")

    def _append_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_append_messages")

    async def _aappend_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_aappend_messages")

    def _append_to_session(
        self,
        scope: Scope,
        messages: list[Message],
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None,
        receipt: Receipt | None,
    ) -> list[Message]:
        raise NotImplementedError("_append_to_session")

    async def _aappend_to_session(
        self,
        scope: Scope,
        messages: list[Message],
        now: datetime,
        expires_at: datetime,
        create: SessionRecord | None,
        receipt: Receipt | None,
    ) -> list[Message]:
        raise NotImplementedError("_aappend_to_session")

    def _replace_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_replace_messages")

    async def _areplace_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_areplace_messages")

    def _get_messages(
        self,
        scope: Scope,
        *,
        status: str | None,
        limit: int | None,
        offset: int | None,
        last: int | None,
    ) -> list[Message]:
        raise NotImplementedError("_get_messages")

    async def _aget_messages(
        self,
        scope: Scope,
        *,
        status: str | None,
        limit: int | None,
        offset: int | None,
        last: int | None,
    ) -> list[Message]:
        raise NotImplementedError("_aget_messages")

    def _count_messages(self, scope: Scope, *, status: str | None) -> int:
        raise NotImplementedError("_count_messages")

    async def _acount_messages(self, scope: Scope, *, status: str | None) -> int:
        raise NotImplementedError("_acount_messages")

    def _delete_messages(self, scope: Scope, *, status: str | None) -> int:
        raise NotImplementedError("_delete_messages")

    async def _adelete_messages(self, scope: Scope, *, status: str | None) -> int:
        raise NotImplementedError("_adelete_messages")

    def _delete_message(self, scope: Scope, seq: int) -> Message | None:
        raise NotImplementedError("_delete_message")

    async def _adelete_message(self, scope: Scope, seq: int) -> Message | None:
        raise NotImplementedError("_adelete_message")

    def _take_oldest(self, scope: Scope, n: int, *, archive: bool) -> list[Message]:
        raise NotImplementedError("_take_oldest")

    async def _atake_oldest(self, scope: Scope, n: int, *, archive: bool) -> list[Message]:
        raise NotImplementedError("_atake_oldest")

    def _upsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        raise NotImplementedError("_upsert_memories")

    async def _aupsert_memories(self, scope: Scope, memories: list[Memory]) -> list[str]:
        raise NotImplementedError("_aupsert_memories")

    def _get_memories(self, user: Scope, ids: list[str]) -> list[Memory]:
        raise NotImplementedError("_get_memories")

    async def _aget_memories(self, user: Scope, ids: list[str]) -> list[Memory]:
        raise NotImplementedError("_aget_memories")

    def _list_memories(
        self, user: Scope, node: Filter | None, limit: int | None, offset: int | None
    ) -> list[Memory]:
        raise NotImplementedError("_list_memories")

    async def _alist_memories(
        self, user: Scope, node: Filter | None, limit: int | None, offset: int | None
    ) -> list[Memory]:
        raise NotImplementedError("_alist_memories")

    def _count_memories(self, user: Scope, node: Filter | None) -> int:
        raise NotImplementedError("_count_memories")

    async def _acount_memories(self, user: Scope, node: Filter | None) -> int:
        raise NotImplementedError("_acount_memories")

    def _delete_memories(self, user: Scope, ids: list[str] | None, node: Filter | None) -> int:
        raise NotImplementedError("_delete_memories")

    async def _adelete_memories(
        self, user: Scope, ids: list[str] | None, node: Filter | None
    ) -> int:
        raise NotImplementedError("_adelete_memories")

    def _search_memories(
        self, user: Scope, vector: list[float], k: int, node: Filter | None
    ) -> list[Scored]:
        raise NotImplementedError("_search_memories")

    async def _asearch_memories(
        self, user: Scope, vector: list[float], k: int, node: Filter | None
    ) -> list[Scored]:
        raise NotImplementedError("_asearch_memories")

    def _search_text(self, user: Scope, query: str, k: int, node: Filter | None) -> list[Scored]:
        raise NotImplementedError("_search_text")

    async def _asearch_text(
        self, user: Scope, query: str, k: int, node: Filter | None
    ) -> list[Scored]:
        raise NotImplementedError("_asearch_text")

    def _forget_user(self, user: Scope) -> Counts:
        raise NotImplementedError("_forget_user")

    async def _aforget_user(self, user: Scope) -> Counts:
        raise NotImplementedError("_aforget_user")

    def _restore_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_restore_messages")

    async def _arestore_messages(self, scope: Scope, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("_arestore_messages")

    def _list_message_sessions(self, user: Scope) -> list[str]:
        raise NotImplementedError("_list_message_sessions")

    async def _alist_message_sessions(self, user: Scope) -> list[str]:
        raise NotImplementedError("_alist_message_sessions")

    def _forget_tenant(self, tenant_id: str) -> Counts:
        raise NotImplementedError("_forget_tenant")

    async def _aforget_tenant(self, tenant_id: str) -> Counts:
        raise NotImplementedError("_aforget_tenant")

    def _list_tenants(self) -> list[str]:
        raise NotImplementedError("_list_tenants")

    async def _alist_tenants(self) -> list[str]:
        raise NotImplementedError("_alist_tenants")

    def _purge_expired(self, tenant_id: str, before: datetime) -> Counts:
        raise NotImplementedError("_purge_expired")

    async def _apurge_expired(self, tenant_id: str, before: datetime) -> Counts:
        raise NotImplementedError("_apurge_expired")

    # The audit trail (``audit``): append one event to its tenant's chain in a transaction
    # of its own; read and prune on the owner's path.

    def _append_audit(self, event: AuditEvent) -> None:
        raise NotImplementedError("_append_audit")

    async def _aappend_audit(self, event: AuditEvent) -> None:
        raise NotImplementedError("_aappend_audit")

    def _read_audit(self, query: AuditQuery) -> list[AuditEvent]:
        raise NotImplementedError("_read_audit")

    async def _aread_audit(self, query: AuditQuery) -> list[AuditEvent]:
        raise NotImplementedError("_aread_audit")

    def _prune_audit(self, before: datetime) -> int:
        raise NotImplementedError("_prune_audit")


instrument(Backend)  # the audit hooks, on every public storage method
instrument(GraphMethods)


def _tenant(tenant_id: str) -> str:
    return Scope(tenant_id).tenant_id  # the canonical form, or InvalidIdentifier


def _aware(moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInput("a timezone-aware datetime is required", field="before")
    return moment


def _add(total: Counts, more: Counts) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n


def _check_seqs(messages: Sequence[Message]) -> list[Message]:
    seen: set[int] = set()
    for m in messages:
        seq = m.seq
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= INT64_MAX:
            raise InvalidInput("restored messages need positive 64-bit integer seqs", field="seq")
        if seq in seen:
            raise InvalidInput("restored messages need distinct seqs", field="seq")
        seen.add(seq)
    return sorted(messages, key=lambda m: m.seq or 0)


def _vector(embedding: Sequence[float]) -> list[float]:
    try:
        vector = list(map(float, embedding))  # map, not a generator: 3x faster on bulk loads
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput("an embedding must be a sequence of numbers", field="embedding") from exc
    if not vector:
        raise InvalidInput("an embedding must not be empty", field="embedding")
    if not all(map(math.isfinite, vector)):  # pgvector refuses NaN and infinity
        raise InvalidInput("an embedding must hold finite numbers", field="embedding")
    return vector
