"""The audit trail: an event for every decision that matters, in a tamper-evident chain.

    audit:
      enabled: true        # off: nothing is recorded
      sink: database       # database (the backend's own table) | log (JSON lines) | none
      reads: false         # also every read (costs a write per read: see the benchmark)
      writes: false        # also every write
      retention_days: 365  # `muxi-isolation audit prune` deletes older events

What is recorded by default: each refusal (``MissingScope``, ``ScopeViolation``,
``ReservedKey``, 401/403 at the HTTP edge), each id answered as missing (an unknown id
and another user's id look the same, by design, so both are recorded), each record the
verification dropped, and each admin or tenant-wide act (export, forget, purge, import,
scope-key rotation, an admin key acting as a user). An event holds who and what, never
content: time, tenant, user, session, actor (a key id, or ``app``), interface (core,
langchain, langgraph, llamaindex, http, cli), operation, outcome and target ids.

The hooks sit on the storage pipeline (``instrument`` wraps the public methods of
``Backend``, sync and async alike), so every interface above it is covered at once; the HTTP
edge and the CLI name themselves and their actor with ``acting``. Each event is written in
its own short transaction, after the call: a refusal's event is never rolled back with it.

Per tenant the events form a hash chain: each stores ``sha256(prev_hash + body)``, so an
edited or deleted event breaks every later link (``verify_chain``, ``muxi-isolation audit
verify``). On PostgreSQL the app role may only append, through a ``SECURITY DEFINER``
function; it can neither read, change nor delete an event. With OpenTelemetry installed,
each event is also added to the current span.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import AccessDenied, MissingScope, ScopeViolation, SessionNotFound
from .scope import Scope

if TYPE_CHECKING:
    from .config import AuditConfig
    from .stores.base import Backend

__all__ = [
    "DENIED",
    "DROPPED",
    "GENESIS",
    "MISSING",
    "NO_AUDIT",
    "OK",
    "OUTCOMES",
    "AuditEvent",
    "AuditQuery",
    "Auditor",
    "ChainBreak",
    "DatabaseSink",
    "EventList",
    "LogSink",
    "OtelSink",
    "acting",
    "aread_events",
    "chain_hash",
    "guard",
    "heads",
    "instrument",
    "note_dropped",
    "probing",
    "prune",
    "read_events",
    "recorded",
    "refusal",
    "verify",
    "verify_chain",
]

log = logging.getLogger("muxi_isolation.audit")

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


# -- who is acting, and through which interface ---------------------------------------------


@dataclass(frozen=True)
class _Acting:
    actor: str
    interface: str


_acting: ContextVar[_Acting | None] = ContextVar("muxi_isolation_audit_acting", default=None)
_ADAPTERS = "muxi_isolation.adapters."


@contextmanager
def acting(actor: str, interface: str) -> Iterator[None]:
    """Name the actor (a key id, ``app``) and interface of the calls inside the block."""
    token = _acting.set(_Acting(actor, interface))
    try:
        yield
    finally:
        _acting.reset(token)


def _who() -> _Acting:
    """The edge's own word, else the adapter on the call stack, else the core API."""
    named = _acting.get()
    if named is not None:
        return named
    frame = sys._getframe(2)
    while frame is not None:  # only when an event is written: rare by default
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(_ADAPTERS):
            return _Acting("app", module[len(_ADAPTERS) :].split(".")[0])
        frame = frame.f_back  # type: ignore[assignment]
    return _Acting("app", "core")


# -- sinks ----------------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, event: AuditEvent) -> None: ...

    async def awrite(self, event: AuditEvent) -> None: ...


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

    def write(self, event: AuditEvent) -> None:
        """To every sink; a sink that fails is logged and skipped (the call's own outcome
        stands: a refusal is still refused, an admin act is done)."""
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception:
                log.exception("could not write the audit event %s", event.operation)

    async def awrite(self, event: AuditEvent) -> None:
        for sink in self.sinks:
            try:
                await sink.awrite(event)
            except Exception:
                log.exception("could not write the audit event %s", event.operation)

    def record(
        self,
        operation: str,
        outcome: str = OK,
        subject: Scope | str | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        """Record one event now (an edge's refusal, an admin act outside the storage)."""
        if self.enabled:
            self.write(self.event(operation, outcome, subject, targets))

    async def arecord(
        self,
        operation: str,
        outcome: str = OK,
        subject: Scope | str | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        if self.enabled:
            await self.awrite(self.event(operation, outcome, subject, targets))


NO_AUDIT = Auditor()


# -- the hooks on the storage pipeline ------------------------------------------------------


@dataclass
class _Call:
    """The audited call in progress: records the verification dropped during it."""

    auditor: Auditor
    subject: Scope | str | None
    dropped: list[AuditEvent] = field(default_factory=list)


_call: ContextVar[_Call | None] = ContextVar("muxi_isolation_audit_call", default=None)
_probing: ContextVar[bool] = ContextVar("muxi_isolation_audit_probing", default=False)


@contextmanager
def probing() -> Iterator[None]:
    """Inside the block an id answered as missing is the library's own existence check
    (``SessionManager.ensure``: create it when missing; an import comparing what is
    stored), not an answer to a caller: it leaves no event."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)


def note_dropped(scope: Scope, target: str | None) -> None:
    """Called by ``policy.verify`` for each foreign record it drops."""
    call = _call.get()
    if call is not None:
        targets = () if target is None else (target,)
        call.dropped.append(call.auditor.event("verify", DROPPED, scope, targets))


Targets = Callable[[tuple[Any, ...], dict[str, Any]], list[str]]


def _arg(i: int | None, name: str) -> Targets:
    """The ids in argument ``name`` (positional ``i`` after the scope; ``None``: keyword)."""

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        value = kwargs.get(name, args[i] if i is not None and len(args) > i else None)
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return [str(getattr(v, "id", v)) for v in value]
        return []

    return pick


def _none(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    return []


# Every public storage method: (kind, its target ids). Async twins are ``a`` + name.
OPERATIONS: dict[str, tuple[Kind, Targets]] = {
    "insert_session": ("write", _none),
    "get_receipt": ("read", _none),
    "get_session": ("read", _arg(1, "session_id")),
    "list_sessions": ("read", _none),
    "touch_session": ("write", _arg(1, "session_id")),
    "renew_session": ("write", _arg(1, "session_id")),
    "delete_session": ("write", _arg(1, "session_id")),
    "append_messages": ("write", _none),
    "replace_messages": ("write", _none),
    "append_to_session": ("write", _none),
    "get_messages": ("read", _none),
    "count_messages": ("read", _none),
    "delete_messages": ("write", _none),
    "delete_message": ("write", _none),
    "take_oldest": ("write", _none),
    "upsert_memories": ("write", _arg(1, "memories")),
    "get_memories": ("read", _arg(1, "ids")),
    "list_memories": ("read", _none),
    "count_memories": ("read", _none),
    "delete_memories": ("write", _arg(None, "ids")),
    "search_memories": ("read", _none),
    "forget_user": ("admin", _none),
    "restore_messages": ("admin", _none),
    "list_message_sessions": ("read", _none),
    "forget_tenant": ("admin", _none),
    "list_tenants": ("read", _none),
    "purge_expired": ("admin", _none),
    "put_checkpoint": ("write", _none),
    "get_checkpoints": ("read", _none),
    "put_checkpoint_writes": ("write", _none),
    "delete_thread": ("write", _arg(1, "thread_id")),
    "copy_thread": ("write", _arg(1, "source_thread_id")),
    "prune_threads": ("write", _none),
    "delete_checkpoints": ("write", _none),
    "get_items": ("read", _none),
    "put_items": ("write", _none),
    "search_items": ("read", _none),
    "refresh_items": ("write", _none),
    "list_namespaces": ("read", _none),
    "rotate_scope_key": ("admin", _none),
}


def _subject(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Scope | str | None:
    """Whom a call is for: its scope, or the tenant of a tenant-wide act."""
    if name in ("forget_tenant", "purge_expired"):
        tenant = kwargs.get("tenant_id", args[0] if name == "forget_tenant" and args else None)
        return tenant if isinstance(tenant, str) else None
    first = args[0] if args else kwargs.get("scope")
    return first if isinstance(first, Scope) else None


def _answered(operation: str, result: Any, targets: list[str]) -> tuple[str, list[str]]:
    """An id-based call's outcome: ``missing`` (with the ids) when nothing was found."""
    if operation in ("get_session", "renew_session") and result is None:
        return MISSING, targets
    if operation in ("touch_session", "delete_session") and result is False:
        return MISSING, targets
    if operation == "get_memories":
        found = {m.id for m in result}
        missing = [t for t in targets if t not in found]
        return (MISSING, missing) if missing else (OK, targets)
    return OK, targets


def _after(
    auditor: Auditor, name: str, kind: Kind, targets: list[str], result: Any, call: _Call
) -> list[AuditEvent]:
    """The events a finished call leaves: drops, a miss, or the act itself if recorded."""
    events = list(call.dropped)
    outcome, targets = _answered(name, result, targets)
    if outcome == MISSING and _probing.get():
        outcome = OK
    wanted = kind == "admin" or (kind == "read" and auditor.reads)
    if outcome != OK or wanted or (kind == "write" and auditor.writes):
        events.append(auditor.event(name, outcome, call.subject, targets))
    return events


def _refusal(exc: Exception) -> str | None:
    if isinstance(exc, REFUSALS):
        return DENIED
    if isinstance(exc, SessionNotFound) and not _probing.get():
        return MISSING
    return None


def refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal the trail records (an edge's 401/403 included)."""
    return isinstance(exc, (*REFUSALS, AccessDenied))


def recorded(exc: BaseException) -> bool:
    """Whether a storage hook already recorded ``exc`` (so an edge does not again)."""
    return bool(getattr(exc, "_muxi_audited", False))


def _wrap(name: str, kind: Kind, targets_of: Targets, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(self: Backend, *args: Any, **kwargs: Any) -> Any:
            auditor = self.audit
            if not auditor.enabled:
                return await fn(self, *args, **kwargs)
            call = _Call(auditor, _subject(name, args, kwargs))
            token = _call.set(call)
            try:
                result = await fn(self, *args, **kwargs)
            except Exception as exc:
                outcome = _refusal(exc)
                _call.reset(token)
                if outcome is not None:
                    targets = _safe(targets_of, args, kwargs)
                    await auditor.awrite(auditor.event(name, outcome, call.subject, targets))
                    exc._muxi_audited = True  # type: ignore[attr-defined]
                raise
            _call.reset(token)
            for event in _after(auditor, name, kind, targets_of(args, kwargs), result, call):
                await auditor.awrite(event)
            return result

        return acall

    @functools.wraps(fn)
    def scall(self: Backend, *args: Any, **kwargs: Any) -> Any:
        auditor = self.audit
        if not auditor.enabled:
            return fn(self, *args, **kwargs)
        call = _Call(auditor, _subject(name, args, kwargs))
        token = _call.set(call)
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            outcome = _refusal(exc)
            _call.reset(token)
            if outcome is not None:
                targets = _safe(targets_of, args, kwargs)
                auditor.write(auditor.event(name, outcome, call.subject, targets))
                exc._muxi_audited = True  # type: ignore[attr-defined]
            raise
        _call.reset(token)
        for event in _after(auditor, name, kind, targets_of(args, kwargs), result, call):
            auditor.write(event)
        return result

    return scall


def _safe(targets_of: Targets, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    try:
        return targets_of(args, kwargs)
    except Exception:  # a refused call's arguments may be anything
        return []


def instrument(cls: type, names: Iterable[str] | None = None) -> None:
    """Wrap ``cls``'s own public storage methods (and their ``a`` twins) with the hooks."""
    for name in OPERATIONS if names is None else names:
        kind, targets_of = OPERATIONS[name]
        for attr in (name, f"a{name}"):
            fn = cls.__dict__.get(attr)
            if fn is not None and not getattr(fn, "__muxi_audited__", False):
                wrapped = _wrap(name, kind, targets_of, fn)
                wrapped.__muxi_audited__ = True  # type: ignore[attr-defined]
                setattr(cls, attr, wrapped)


def guard(cls: type, backend_of: Callable[[Any], Backend]) -> None:
    """Record the refusals an adapter class makes itself, before any storage call (a
    reserved key in a framework's metadata, a config naming two users): each public
    method of ``cls``'s own is wrapped; a refusal the storage hooks already recorded is
    not recorded twice. The interface is the adapter's package."""
    interface = cls.__module__.removeprefix(_ADAPTERS).split(".")[0]
    for name, fn in list(vars(cls).items()):
        plain = inspect.isfunction(fn) and not inspect.isgeneratorfunction(fn)
        if name.startswith("_") or not plain or inspect.isasyncgenfunction(fn):
            continue
        setattr(cls, name, _guarded(f"{cls.__name__}.{name}", interface, backend_of, fn))


def _guarded(
    operation: str, interface: str, backend_of: Callable[[Any], Backend], fn: Callable[..., Any]
) -> Callable[..., Any]:
    def event(self: Any, exc: Exception) -> tuple[Auditor, AuditEvent] | None:
        if not refusal(exc) or recorded(exc):
            return None
        try:
            auditor = backend_of(self).audit
        except Exception:  # no storage yet: nothing to record into
            return None
        if not auditor.enabled:
            return None
        subject = getattr(self, "scope", None)
        who = _acting.get() or _Acting("app", interface)
        with acting(who.actor, who.interface):
            made = auditor.event(operation, DENIED, subject if isinstance(subject, Scope) else None)
        exc._muxi_audited = True  # type: ignore[attr-defined]
        return auditor, made

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            except Exception as exc:
                found = event(self, exc)
                if found is not None:
                    await found[0].awrite(found[1])
                raise

        return acall

    @functools.wraps(fn)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            found = event(self, exc)
            if found is not None:
                found[0].write(found[1])
            raise

    return call


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


# -- reading, verifying and pruning a backend's trail (the admin's) -------------------------


def read_events(backend: Backend, query: AuditQuery | None = None) -> list[AuditEvent]:
    """The backend's stored events matching ``query``, oldest first (its owner's path)."""
    return backend._read_audit(query or AuditQuery())


async def aread_events(backend: Backend, query: AuditQuery | None = None) -> list[AuditEvent]:
    return await backend._aread_audit(query or AuditQuery())


def verify(backend: Backend, tenant_id: str | None = None) -> list[ChainBreak]:
    """Every break in the backend's chains (one tenant's with ``tenant_id``)."""
    return verify_chain(read_events(backend, AuditQuery(tenant_id=tenant_id)))


def heads(backend: Backend) -> dict[str, dict[str, Any]]:
    """Each chain's newest ``seq`` and ``hash``: keep them elsewhere to detect a truncation."""
    last: dict[str, AuditEvent] = {}
    for event in read_events(backend):
        key = event.tenant_id or ""
        if key not in last or (event.seq or 0) > (last[key].seq or 0):
            last[key] = event
    return {k: {"seq": e.seq, "hash": e.hash} for k, e in sorted(last.items())}


def prune(backend: Backend, now: datetime | None = None) -> int:
    """Delete the events older than the retention (the oldest of each chain); how many.
    Recorded as an event of its own."""
    retention = backend.audit.retention
    if retention is None:
        return 0
    before = (now or datetime.now(timezone.utc)) - retention
    gone = backend._prune_audit(before)
    backend.audit.record("audit_prune", OK, None, [before.isoformat()])
    return gone
