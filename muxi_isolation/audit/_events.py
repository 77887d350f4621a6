"""Audit events and their per-tenant hash chain: what an event holds, how the chain is
hashed and verified, which events a query reads, and the in-process store of them."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from ..errors import MissingScope, ScopeViolation

__all__ = [
    "DENIED",
    "DROPPED",
    "GENESIS",
    "MISSING",
    "OK",
    "OUTCOMES",
    "REFUSALS",
    "AuditEvent",
    "AuditQuery",
    "ChainBreak",
    "EventList",
    "Kind",
    "chain_hash",
    "verify_chain",
]

OK, DENIED, MISSING, DROPPED = "ok", "denied", "missing", "dropped"
OUTCOMES = (OK, DENIED, MISSING, DROPPED)
GENESIS = "0" * 64  # the previous hash of each chain's first event
REFUSALS = (MissingScope, ScopeViolation)  # ReservedKey is a ScopeViolation
Kind = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class AuditEvent:
    """One decision. ``tenant_id`` names its chain (``None``: the chain of events without a
    tenant); ``seq``, ``prev_hash`` and ``hash`` are set when it is stored."""

    at: datetime
    tenant_id: str | None
    user_id: str | None
    session_id: str | None
    actor: str
    interface: str
    operation: str
    outcome: str
    targets: tuple[str, ...] = ()
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def body(self) -> str:
        """What the chain hashes: every field but the chain's own, in one canonical form."""
        at = self.at.astimezone(timezone.utc).isoformat(timespec="microseconds")
        fields: list[Any] = [at, self.tenant_id, self.user_id, self.session_id, self.actor]
        fields += [self.interface, self.operation, self.outcome, list(self.targets)]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    def chained(self, seq: int, prev_hash: str) -> AuditEvent:
        return replace(self, seq=seq, prev_hash=prev_hash, hash=chain_hash(prev_hash, self.body()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.astimezone(timezone.utc).isoformat()
        data["targets"] = list(self.targets)
        return data


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """Where a tenant's chain does not hold: a changed event, or one missing before it."""

    tenant_id: str | None
    seq: int | None
    reason: str


def verify_chain(events: Iterable[AuditEvent]) -> list[ChainBreak]:
    """Every break in the chains of ``events`` (each tenant's in ``seq`` order).

    A chain may start after ``seq`` 1 (retention pruned its oldest events); from there each
    event must follow the one before it: the next ``seq``, the previous ``hash``, its own
    body. Deleting the newest events leaves no trace in the chain itself: keep the heads
    (``Auditor.heads``) somewhere else to detect that.
    """
    breaks: list[ChainBreak] = []
    last: dict[str | None, AuditEvent] = {}
    for event in sorted(events, key=lambda e: (e.tenant_id or "", e.seq or 0)):
        before = last.get(event.tenant_id)
        problem = None
        if event.hash != chain_hash(event.prev_hash or "", event.body()):
            problem = "the event was changed after it was written"
        elif before is None and event.seq == 1 and event.prev_hash != GENESIS:
            problem = "the first event does not start the chain"
        elif before is not None and event.seq != (before.seq or 0) + 1:
            problem = f"events {(before.seq or 0) + 1} to {(event.seq or 1) - 1} are missing"
        elif before is not None and event.prev_hash != before.hash:
            problem = "the event does not follow the one before it"
        if problem:
            breaks.append(ChainBreak(event.tenant_id, event.seq, problem))
        last[event.tenant_id] = event
    return breaks


@dataclass(frozen=True)
class AuditQuery:
    """Which events to read (every field optional), oldest first, at most ``limit``."""

    tenant_id: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    outcome: str | None = None
    limit: int | None = None

    def matches(self, event: AuditEvent) -> bool:
        return (
            (self.tenant_id is None or event.tenant_id == self.tenant_id)
            and (self.user_id is None or event.user_id == self.user_id)
            and (self.since is None or event.at >= self.since)
            and (self.outcome is None or event.outcome == self.outcome)
        )


# -- the in-process store: the memory backend's, and the model of the SQL one ---------------


class EventList:
    """Events chained per tenant in a list, under a lock (what ``MemoryBackend`` keeps)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._heads: dict[str | None, AuditEvent] = {}
        self._lock = threading.Lock()

    def append(self, event: AuditEvent) -> None:
        with self._lock:
            head = self._heads.get(event.tenant_id)
            seq, prev = (head.seq or 0, head.hash or GENESIS) if head else (0, GENESIS)
            stored = event.chained(seq + 1, prev)
            self.events.append(stored)
            self._heads[event.tenant_id] = stored

    def read(self, query: AuditQuery) -> list[AuditEvent]:
        with self._lock:
            found = [e for e in self.events if query.matches(e)]
        found.sort(key=lambda e: (e.at, e.tenant_id or "", e.seq or 0))
        return found if query.limit is None else found[: query.limit]

    def prune(self, before: datetime) -> int:
        with self._lock:
            kept = [e for e in self.events if e.at >= before]
            gone, self.events = len(self.events) - len(kept), kept
        return gone
