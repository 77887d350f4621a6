"""The hooks on the storage pipeline: ``instrument`` wraps a backend class's public storage
methods (sync and async alike), ``guard`` an adapter class's own methods, so that every
refusal, miss, drop and admin act leaves an event, written after the call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AccessDenied, SessionNotFound
from ..scope import Scope
from ._auditor import ADAPTERS, Acting, Auditor, acting, current_acting
from ._events import DENIED, DROPPED, MISSING, OK, REFUSALS, AuditEvent, Kind

if TYPE_CHECKING:
    from ..stores.base import Backend

__all__ = ["guard", "instrument", "note_dropped", "probing", "recorded", "refusal"]


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


class _Watch:
    """One audited call: opened before it runs (drops are noted against it), then the
    events its end leaves. Written once for the sync and the async wrapper."""

    def __init__(
        self,
        auditor: Auditor,
        name: str,
        kind: Kind,
        targets_of: Targets,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.name, self.kind, self.targets_of = name, kind, targets_of
        self.args, self.kwargs = args, kwargs
        self.call = _Call(auditor, _subject(name, args, kwargs))
        self.token = _call.set(self.call)

    def failed(self, exc: Exception) -> list[AuditEvent]:
        """A refusal or a miss the call raised: its event (and ``exc`` marked recorded)."""
        outcome = _refusal(exc)
        _call.reset(self.token)
        if outcome is None:
            return []
        targets = _safe(self.targets_of, self.args, self.kwargs)
        event = self.call.auditor.event(self.name, outcome, self.call.subject, targets)
        exc._muxi_audited = True  # type: ignore[attr-defined]
        return [event]

    def done(self, result: Any) -> list[AuditEvent]:
        _call.reset(self.token)
        targets = self.targets_of(self.args, self.kwargs)
        return _after(self.call.auditor, self.name, self.kind, targets, result, self.call)


def _wrap(name: str, kind: Kind, targets_of: Targets, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(self: Backend, *args: Any, **kwargs: Any) -> Any:
            auditor = self.audit
            if not auditor.enabled:
                return await fn(self, *args, **kwargs)
            watch = _Watch(auditor, name, kind, targets_of, args, kwargs)
            try:
                result = await fn(self, *args, **kwargs)
            except Exception as exc:
                for event in watch.failed(exc):
                    await auditor.awrite(event)
                raise
            for event in watch.done(result):
                await auditor.awrite(event)
            return result

        return acall

    @functools.wraps(fn)
    def scall(self: Backend, *args: Any, **kwargs: Any) -> Any:
        auditor = self.audit
        if not auditor.enabled:
            return fn(self, *args, **kwargs)
        watch = _Watch(auditor, name, kind, targets_of, args, kwargs)
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            for event in watch.failed(exc):
                auditor.write(event)
            raise
        for event in watch.done(result):
            auditor.write(event)
        return result

    return scall


def _safe(targets_of: Targets, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    try:
        return targets_of(args, kwargs)
    except Exception:  # a refused call's arguments may be anything
        return []


def instrument(cls: type, *, admin: Iterable[str] = ()) -> None:
    """Wrap ``cls``'s own storage methods (both halves, each made from its operation by
    ``stores.operations.methods``) with the hooks, as their operations declare; ``admin``
    names other methods of ``cls`` audited as admin acts."""
    own = vars(cls)
    audited = {attr: _declared(fn) for attr, fn in own.items() if _operation(fn) is not None}
    audited.update({attr: (attr, "admin", _none) for attr in admin})
    for attr, (name, kind, targets_of) in audited.items():
        fn = own[attr]
        if not getattr(fn, "__muxi_audited__", False):
            wrapped = _wrap(name, kind, targets_of, fn)
            wrapped.__muxi_audited__ = True  # type: ignore[attr-defined]
            setattr(cls, attr, wrapped)


def _operation(fn: Any) -> Any:
    return getattr(fn, "__muxi_operation__", None)


def _declared(fn: Callable[..., Any]) -> tuple[str, Kind, Targets]:
    """A storage method's name (its sync one), kind and target ids, from its operation."""
    op = _operation(fn)
    kind: Kind = "admin" if op.admin else "write" if op.write else "read"
    if op.audit_ids is None:
        return op.name, kind, _none
    params = list(inspect.signature(fn).parameters.values())[1:]  # after self
    param = next(p for p in params if p.name == op.audit_ids)
    keyword = param.kind is inspect.Parameter.KEYWORD_ONLY
    return op.name, kind, _arg(None if keyword else params.index(param), param.name)


def guard(cls: type, backend_of: Callable[[Any], Backend]) -> None:
    """Record the refusals an adapter class makes itself, before any storage call (a
    reserved key in a framework's metadata, a config naming two users): each public
    method of ``cls``'s own is wrapped; a refusal the storage hooks already recorded is
    not recorded twice. The interface is the adapter's package."""
    interface = cls.__module__.removeprefix(ADAPTERS).split(".")[0]
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
        who = current_acting() or Acting("app", interface)
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
