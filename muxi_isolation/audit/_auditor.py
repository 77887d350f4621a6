"""Who is acting (``acting``), where events go (the sinks), and what is recorded
(``Auditor``)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Protocol

from ..plans import Plan, step, twins
from ..scope import Scope
from ._events import OK, AuditEvent

if TYPE_CHECKING:
    from ..config import AuditConfig
    from ..stores.base import Backend

__all__ = [
    "ADAPTERS",
    "NO_AUDIT",
    "Acting",
    "Auditor",
    "DatabaseSink",
    "LogSink",
    "OtelSink",
    "Sink",
    "acting",
    "current_acting",
]

log = logging.getLogger("muxi_isolation.audit")


# -- who is acting, and through which interface ---------------------------------------------


@dataclass(frozen=True)
class Acting:
    actor: str
    interface: str


_acting: ContextVar[Acting | None] = ContextVar("muxi_isolation_audit_acting", default=None)
ADAPTERS = "muxi_isolation.adapters."


@contextmanager
def acting(actor: str, interface: str) -> Iterator[None]:
    """Name the actor (a key id, ``app``) and interface of the calls inside the block."""
    token = _acting.set(Acting(actor, interface))
    try:
        yield
    finally:
        _acting.reset(token)


def current_acting() -> Acting | None:
    """The actor and interface named by the innermost ``acting`` block, if any."""
    return _acting.get()


def _who() -> Acting:
    """The edge's own word, else the adapter on the call stack, else the core API."""
    named = _acting.get()
    if named is not None:
        return named
    frame = sys._getframe(2)
    while frame is not None:  # only when an event is written: rare by default
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(ADAPTERS):
            return Acting("app", module[len(ADAPTERS) :].split(".")[0])
        frame = frame.f_back  # type: ignore[assignment]
    return Acting("app", "core")


# -- sinks ----------------------------------------------------------------------------------


class Sink(Protocol):
    """Where events go: both halves, so an async caller's sink need not block its loop."""

    def write(self, event: AuditEvent) -> None:
        """Store or emit ``event`` (the sync half)."""

    async def awrite(self, event: AuditEvent) -> None:
        """The async half of ``write`` (a sink without async I/O calls ``write``)."""


class DatabaseSink:
    """The backend's own audit table (the memory backend: a list), chained per tenant."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def write(self, event: AuditEvent) -> None:
        self.backend._append_audit(event)

    async def awrite(self, event: AuditEvent) -> None:
        await self.backend._aappend_audit(event)


class LogSink:
    """One JSON line per event on the ``muxi_isolation.audit`` logger (INFO)."""

    def write(self, event: AuditEvent) -> None:
        log.info(json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")))

    async def awrite(self, event: AuditEvent) -> None:
        self.write(event)


class OtelSink:
    """Each event as a span event on the current OpenTelemetry span (a no-op without one)."""

    def __init__(self) -> None:
        from opentelemetry import trace

        self._trace = trace

    def write(self, event: AuditEvent) -> None:
        attributes = {
            f"muxi.{k}": v for k, v in event.to_dict().items() if v is not None and k != "hash"
        }
        attributes["muxi.targets"] = list(event.targets)
        self._trace.get_current_span().add_event("muxi.audit", attributes=attributes)

    async def awrite(self, event: AuditEvent) -> None:
        self.write(event)


def _otel() -> list[Sink]:
    try:
        return [OtelSink()]
    except ImportError:
        return []


# -- the auditor ----------------------------------------------------------------------------


@dataclass
class Auditor:
    """What to record and where. ``Backend.audit`` holds one (``NO_AUDIT`` by default; a
    backend opened from a config gets the config's, on by default)."""

    enabled: bool = False
    sinks: Sequence[Sink] = ()
    reads: bool = False
    writes: bool = False
    retention: timedelta | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    @classmethod
    def from_config(cls, config: AuditConfig, backend: Backend) -> Auditor:
        if not config.enabled:
            return NO_AUDIT
        sinks: list[Sink] = []
        if config.sink == "database":
            sinks.append(DatabaseSink(backend))
        elif config.sink == "log":
            sinks.append(LogSink())
        retention = timedelta(days=config.retention_days) if config.retention_days else None
        return cls(True, [*sinks, *_otel()], config.reads, config.writes, retention)

    @classmethod
    def database(cls, backend: Backend, *, reads: bool = False, writes: bool = False) -> Auditor:
        """Record into ``backend``'s own table (and OpenTelemetry when installed)."""
        return cls(True, [DatabaseSink(backend), *_otel()], reads, writes)

    def event(
        self,
        operation: str,
        outcome: str,
        subject: Scope | str | None = None,
        targets: Sequence[str] = (),
    ) -> AuditEvent:
        who = _who()
        scope = subject if isinstance(subject, Scope) else None
        tenant = scope.tenant_id if scope else subject if isinstance(subject, str) else None
        return AuditEvent(
            self.clock(),
            tenant,
            scope.user_id if scope else None,
            scope.session_id if scope else None,
            who.actor,
            who.interface,
            operation,
            outcome,
            tuple(targets),
        )

    # Each pair below runs one plan (``plans``): only the sink's half differs.

    def _write(self, event: AuditEvent) -> Plan[None]:
        """To every sink; a sink that fails is logged and skipped (the call's own outcome
        stands: a refusal is still refused, an admin act is done)."""
        for sink in self.sinks:
            try:
                yield from step(sink.write, sink.awrite, event)
            except Exception:
                log.exception("could not write the audit event %s", event.operation)

    def _record(
        self,
        operation: str,
        outcome: str = OK,
        subject: Scope | str | None = None,
        targets: Sequence[str] = (),
    ) -> Plan[None]:
        """Record one event now (an edge's refusal, an admin act outside the storage)."""
        if self.enabled:
            yield from self._write(self.event(operation, outcome, subject, targets))

    write, awrite = twins(_write)
    record, arecord = twins(_record)


NO_AUDIT = Auditor()
