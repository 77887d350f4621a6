"""Per-(tenant, user) limits: what they are, and the checks that enforce them.

    limits:
      requests_per_minute: 600         # the HTTP edge, per (tenant, user)
      max_sessions_per_user: 1000      # counted in storage, atomically with the write
      max_memories_per_user: 100000
      max_message_bytes: 65536         # each message's content, as stored (UTF-8 JSON)
      tenants:
        tenant_a: {max_memories_per_user: 1000}

Every key is optional; unset means no limit, and a tenant's entry overrides only the keys
it sets. The counts are checked by the backend inside the write's own transaction (under
the memory backend's lock, SQLite's ``BEGIN IMMEDIATE``, or a PostgreSQL advisory lock
keyed on the (tenant, user)), so two writers at the limit cannot both pass and one user
at its limit never waits on another. The rate limit lives in the serving process (a token
bucket per (tenant, user)): with several server processes each keeps its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from .errors import QuotaExceeded

if TYPE_CHECKING:
    from .config import LimitsConfig
    from .records import Message

__all__ = [
    "NO_LIMITS",
    "Limits",
    "RateLimiter",
    "check_count",
    "check_messages",
    "lock_key",
    "message_bytes",
]

SESSIONS = "max_sessions_per_user"
MEMORIES = "max_memories_per_user"
MESSAGE_BYTES = "max_message_bytes"
REQUESTS = "requests_per_minute"


@dataclass(frozen=True)
class Limits:
    """The limits of every tenant, with per-tenant overrides (``for_tenant``)."""

    requests_per_minute: int | None = None
    max_sessions_per_user: int | None = None
    max_memories_per_user: int | None = None
    max_message_bytes: int | None = None
    tenants: Mapping[str, Limits] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: LimitsConfig) -> Limits:
        own = config.model_dump(exclude={"tenants"})
        tenants = {t: cls(**over.model_dump()) for t, over in config.tenants.items()}
        return cls(**own, tenants=tenants)

    def for_tenant(self, tenant_id: str) -> Limits:
        """This tenant's limits: its overrides, else the defaults (without ``tenants``)."""
        if not self.tenants:  # already what ``replace`` would make (it cost 4 us a write)
            return self
        over = self.tenants.get(tenant_id)
        mine = replace(self, tenants={})
        if over is None:
            return mine
        changed = {f.name: getattr(over, f.name) for f in fields(over) if f.name != "tenants"}
        return replace(mine, **{k: v for k, v in changed.items() if v is not None})


NO_LIMITS = Limits()


def message_bytes(message: Message) -> int:
    """A message's stored size: the UTF-8 bytes of its content as JSON."""
    text = json.dumps(message.content, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def check_messages(limits: Limits, tenant_id: str, messages: Sequence[Message]) -> None:
    """``QuotaExceeded`` if any message is larger than the tenant allows; before any write."""
    allowed = limits.for_tenant(tenant_id).max_message_bytes
    if allowed is not None and any(message_bytes(m) > allowed for m in messages):
        raise QuotaExceeded(MESSAGE_BYTES, allowed)


def check_count(limit: str, allowed: int | None, held: Callable[[], int], adding: int) -> None:
    """``QuotaExceeded`` if ``adding`` more rows would take the user past ``allowed``.

    ``held`` counts the user's rows; it runs only when there is a limit and something to
    add, inside the caller's write transaction (or lock). A user already past a limit that
    was lowered may still replace what it has, never add.
    """
    if allowed is None or adding <= 0:
        return
    if held() + adding > allowed:
        raise QuotaExceeded(limit, allowed)


def lock_key(kind: str, tenant_id: str, user_id: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock``: one per (kind, tenant, user)."""
    digest = hashlib.blake2b(f"{kind}\0{tenant_id}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RateLimiter:
    """``requests_per_minute`` per (tenant, user): a token bucket in this process.

    Each user's bucket holds up to the limit and refills at limit/60 tokens a second; a
    request takes one, and with none left is refused with the seconds until one is back.
    """

    MAX_IDLE_BUCKETS = 10_000  # past this many, full buckets (idle users) are dropped

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (tokens, at)
        self._lock = threading.Lock()

    def take(self, tenant_id: str, user_id: str) -> None:
        """Spend one request of this user's; ``QuotaExceeded`` with ``retry_after`` if none."""
        allowed = self.limits.for_tenant(tenant_id).requests_per_minute
        if allowed is None:
            return
        rate = allowed / 60.0
        now = self.clock()
        key = (tenant_id, user_id)
        with self._lock:
            tokens, at = self._buckets.get(key, (float(allowed), now))
            tokens = min(float(allowed), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / rate)) if rate else 60
                raise QuotaExceeded(REQUESTS, allowed, retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.MAX_IDLE_BUCKETS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            allowed = self.limits.for_tenant(key[0]).requests_per_minute or 0
            if tokens + (now - at) * allowed / 60.0 >= allowed:
                del self._buckets[key]
