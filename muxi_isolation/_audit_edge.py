"""The server's edge of the audit trail: refusals before a route (``AuditEdge``), the actor
of every call past the key check (``AuditActor``), and the audit route's query."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from . import audit
from ._asgi_types import ASGIApp, Receive, Send
from ._asgi_types import Message as ASGIMessage
from ._asgi_types import Scope as ASGIScope
from ._requests import BadRequest
from .errors import IsolationError
from .http import ANONYMOUS, GRANT_KEY, SCOPE_KEY
from .keys import AccessLevel, Grant, KeyRing
from .scope import Scope, canonical_id
from .stores.base import Backend

__all__ = ["AUDIT_LIMIT", "AuditActor", "AuditEdge", "audit_query", "operation"]

AUDIT_LIMIT = 1000  # events per GET /v1/admin/audit at most
_AUDIT_BOX = "muxi_audit"  # in the ASGI scope: whether the request got past the key check


def operation(scope: ASGIScope) -> str:
    """How the trail names a request: its method and path."""
    return f"{scope.get('method', '')} {scope.get('path', '')}"[:64]


class AuditEdge:
    """Record every request the key check refuses (401, 403) before it reaches a route:
    the actor is the key's id when the key is known, the subject the user the header
    names when it parses. Requests past the check are ``AuditActor``'s."""

    def __init__(self, app: ASGIApp, keys: KeyRing, backend: Backend) -> None:
        self.app, self.keys, self.backend = app, keys, backend

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.backend.audit.enabled:
            await self.app(scope, receive, send)
            return
        box = {"reached": False, "status": 0}

        async def watching(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                box["status"] = message["status"]
            await send(message)

        await self.app({**scope, _AUDIT_BOX: box}, receive, watching)
        if box["status"] in (401, 403) and not box["reached"]:
            with audit.acting(self._actor(scope), "http"):
                await self.backend.audit.arecord(
                    operation(scope), audit.DENIED, self._subject(scope)
                )

    def _actor(self, scope: ASGIScope) -> str:
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"x-muxi-client-key")
        try:
            return self.keys.identify(None if key is None else key.decode("latin-1")).key_id or "-"
        except IsolationError:
            return "unknown key" if key else "no key"

    @staticmethod
    def _subject(scope: ASGIScope) -> Scope | None:
        raw = dict(scope.get("headers") or []).get(b"x-muxi-user-id")
        try:
            return Scope.parse(raw.decode("utf-8")) if raw is not None else None
        except (IsolationError, UnicodeDecodeError):
            return None


class AuditActor:
    """Behind the key check: every call of the request names the key (``audit.acting``),
    and an admin key acting as a user (impersonation) is an event of its own."""

    def __init__(self, app: ASGIApp, backend: Backend, admin_paths: tuple[str, ...]) -> None:
        self.app, self.backend, self.admin_paths = app, backend, admin_paths

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        grant = scope.get(GRANT_KEY)
        if scope["type"] != "http" or not isinstance(grant, Grant):
            await self.app(scope, receive, send)
            return
        box = scope.get(_AUDIT_BOX)
        if isinstance(box, dict):
            box["reached"] = True
        actor = grant.key_id or ("anonymous" if grant is ANONYMOUS else "-")
        with audit.acting(actor, "http"):
            path = str(scope.get("path", ""))
            if grant.level is AccessLevel.ADMIN and not path.startswith(self.admin_paths):
                user = scope.get(SCOPE_KEY)
                subject = user if isinstance(user, Scope) else None
                await self.backend.audit.arecord("impersonate", audit.OK, subject, [path[:255]])
            await self.app(scope, receive, send)


def audit_query(params: Mapping[str, str]) -> audit.AuditQuery:
    """``tenant``, ``user`` (an id, or tenant:user), ``since`` (ISO 8601), ``outcome`` and
    ``limit`` (at most 1000, the default) from the query string."""
    unknown = set(params) - {"tenant", "user", "since", "outcome", "limit"}
    if unknown:
        raise BadRequest(422, "invalid_request", f"unknown parameters: {sorted(unknown)}")
    tenant = params.get("tenant")
    tenant = None if tenant is None else Scope(tenant).tenant_id
    user = params.get("user")
    if user is not None and ":" in user:
        parsed = Scope.parse(user)
        tenant, user = parsed.tenant_id, parsed.user_id
    elif user is not None:
        user = canonical_id(user, "user_id")
    since = None
    if params.get("since") is not None:
        try:
            since = datetime.fromisoformat(params["since"])
        except ValueError:
            raise BadRequest(422, "invalid_request", "'since' must be an ISO 8601 time") from None
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    outcome = params.get("outcome")
    if outcome is not None and outcome not in audit.OUTCOMES:
        raise BadRequest(422, "invalid_request", f"'outcome' must be one of {audit.OUTCOMES}")
    limit = params.get("limit", str(AUDIT_LIMIT))
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= AUDIT_LIMIT:
        raise BadRequest(422, "invalid_request", f"'limit' must be 1 to {AUDIT_LIMIT}")
    return audit.AuditQuery(tenant, user, since, outcome, int(limit))
