"""A reference server for the seed's HTTP API, on Starlette (``pip install '.[server]'``).

    POST   /v1/sessions                          a new session: {"id", "user_id", "created_at"}
    GET    /v1/sessions                          the caller's sessions
    GET    /v1/sessions/{id}                     one session with its history
    DELETE /v1/sessions/{id}                     delete a session and its messages
    POST   /v1/chat                              {"message", "session_id"?} -> {"response", ...}
    GET    /v1/admin/users/{user_id}/export      admin key: everything stored for a user
    DELETE /v1/admin/users/{user_id}             admin key: forget a user
    GET    /v1/admin/audit                       admin key: the audit trail's events
    GET    /openapi.json, GET /health            public

Who a request acts for comes only from the headers, through ``MuxiIsolationMiddleware``;
a body naming a user is refused. An admin key calls the admin endpoints and nothing else
(403 on the others) unless its grant allows impersonation (``auth.admin_impersonation``),
and then the middleware logs each request it makes as a user. Every body is checked whole
before anything is written: text no backend can store (NUL, a lone surrogate) or NaN in
any field is 400 ``invalid_input`` naming the field, on every backend.

Every error is JSON ``{"error": code, "message": ...}``, with typed errors mapped by the
one table in ``muxi_isolation.http``. Bodies are parsed as JSON whatever their content
type, so the seed's ``curl -d`` calls work as written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from typing import Any

from .errors import (
    AccessDenied,
    AdapterUnavailable,
    DeadlineExceeded,
    DuplicateRequest,
    IsolationError,
    QuotaExceeded,
    ScopeViolation,
)

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Match, Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise AdapterUnavailable(exc.name or "starlette", "server") from exc

from . import audit, migrate, policy
from ._asgi_types import ASGIApp, Receive, Send
from ._asgi_types import Message as ASGIMessage
from ._asgi_types import Scope as ASGIScope
from ._input import check_json, check_text
from .agent import Agent, DemoAgent, Turn
from .facade import Isolation
from .http import (
    ANONYMOUS,
    GRANT_KEY,
    RETRY_AFTER,
    SCOPE_KEY,
    MuxiIsolationMiddleware,
    error_response,
    send_json,
)
from .idempotency import digest, replayed
from .keys import AccessLevel, Grant, KeyRing
from .outages import OutageLog
from .quotas import RateLimiter
from .records import Message, Receipt, SessionRecord
from .scope import Scope, canonical_id
from .stores.base import Backend

__all__ = [
    "ADMIN_PATHS",
    "MAX_BODY_BYTES",
    "PUBLIC_PATHS",
    "Exporter",
    "Forgetter",
    "create_app",
    "export_user",
    "forget_user",
    "iso_time",
    "openapi_document",
    "run_server",
    "serve_in_thread",
]

log = logging.getLogger("muxi_isolation.server")

MAX_BODY_BYTES = 1 << 20
DEFAULT_REQUEST_TIMEOUT = 5.0  # seconds
HISTORY_WINDOW = 50
PUBLIC_PATHS = ("/openapi.json", "/health")
ADMIN_PATHS = ("/v1/admin/",)
_BODY_SCOPE_FIELDS = frozenset({"user_id", "tenant_id"})

Exporter = Callable[[Isolation, Scope], Awaitable[dict[str, Any]]]
Forgetter = Callable[[Isolation, Scope], Awaitable[dict[str, Any]]]


class _BadRequest(Exception):
    """A request the server cannot read (not JSON, wrong shape, too large)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


# -- JSON shapes ------------------------------------------------------------------------------


def iso_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second, as the seed shows: 2025-01-08T10:00:00Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _session_json(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "created_at": iso_time(record.created_at),
        "last_active_at": iso_time(record.last_active_at),
        "expires_at": iso_time(record.expires_at),
    }


def _message_json(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "metadata": message.metadata,
        "tool_calls": message.tool_calls,
        "status": message.status,
        "created_at": None if message.created_at is None else iso_time(message.created_at),
    }


def _history_json(record: SessionRecord, messages: list[Message]) -> dict[str, Any]:
    return {**_session_json(record), "messages": [_message_json(m) for m in messages]}


# -- admin functions: one each, swappable through create_app ---------------------------------


async def export_user(isolation: Isolation, user: Scope) -> dict[str, Any]:
    """Everything stored for ``user`` (``migrate.aexport_document``, the CLI's export as one
    JSON object): sessions with their messages, memories with their embeddings."""
    return await migrate.aexport_document(isolation.backend, user)


async def forget_user(isolation: Isolation, user: Scope) -> dict[str, Any]:
    """Delete every row of ``user`` (``migrate.aforget_user``); the counts deleted, by kind."""
    return (await migrate.aforget_user(isolation.backend, user)).to_dict()


# -- request helpers --------------------------------------------------------------------------


def _scope(request: Request) -> Scope:
    scope = request.scope.get(SCOPE_KEY)
    if not isinstance(scope, Scope):  # the middleware is missing: fail closed
        raise AccessDenied("no scope was resolved for this request")
    return scope


def _require_admin(request: Request) -> None:
    grant = request.scope.get(GRANT_KEY)
    if not isinstance(grant, Grant) or grant is ANONYMOUS:
        raise AccessDenied("this call needs an admin key")
    grant.allow_admin()


async def _json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object naming no user (``optional``: no body at all is ``{}``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BadRequest(413, "body_too_large", f"the body may be at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BadRequest(413, "body_too_large", "the body is too large")
    if optional and not body:
        return {}
    try:
        data = json.loads(bytes(body))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested deeply
        raise _BadRequest(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest(422, "invalid_request", "the body must be a JSON object")
    named = _BODY_SCOPE_FIELDS.intersection(data)
    if named:
        raise ScopeViolation(
            f"the body may not name {sorted(named)}: the user comes from X-Muxi-User-Id"
        )
    return data


def _check_body(data: Mapping[str, Any]) -> None:
    """Every field of a body (known or not) is something every backend can store: NaN, NUL
    or a lone surrogate anywhere is ``InvalidInput`` naming the field."""
    for name, value in data.items():
        check_text(name, "a body field's name")
        check_json(value, name)


def _field(data: Mapping[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise _BadRequest(422, "invalid_request", f"'{name}' is required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadRequest(422, "invalid_request", f"'{name}' must be a {kind.__name__}")
    return value


# -- idempotent requests ------------------------------------------------------------------------

IDEMPOTENCY_HEADER = "Idempotency-Key"
ReceiptFor = Callable[[dict[str, Any]], "Receipt | None"]


async def _once(
    backend: Backend,
    request: Request,
    scope: Scope,
    data: Mapping[str, Any],
    status: int,
    work: Callable[[ReceiptFor], Awaitable[dict[str, Any]]],
) -> Response:
    """Run ``work`` once per ``Idempotency-Key`` of this user: a retry of a stored request
    gets the first answer and writes nothing; the same key with another body is 422.
    ``work`` stores the receipt its ``receipt_for(body)`` makes with its own writes."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is None:
        return JSONResponse(await work(lambda body: None), status_code=status)
    key = canonical_id(header, "idempotency_key")
    asked = digest({"method": request.method, "path": request.url.path, "body": dict(data)})
    found = replayed(await backend.aget_receipt(scope, key), asked)
    if found is None:
        try:
            body = await work(lambda body: Receipt(key, asked, body))
            return JSONResponse(body, status_code=status)
        except DuplicateRequest:  # a twin of this request was stored meanwhile
            found = replayed(await backend.aget_receipt(scope, key), asked)
            if found is None:
                raise
    headers = {"Idempotent-Replayed": "true"}
    return JSONResponse(found.response, status_code=status, headers=headers)


# -- the app ----------------------------------------------------------------------------------


def create_app(
    isolation: Isolation,
    keys: KeyRing,
    agent: Agent | None = None,
    *,
    require_user_header: bool = False,
    allow_anonymous: bool = False,
    export: Exporter = export_user,
    forget: Forgetter = forget_user,
    close_on_shutdown: bool = False,
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
) -> Starlette:
    """The reference server over ``isolation``, accepting ``keys``.

    Args:
        request_timeout: seconds a request may take before it is answered 503
            ``deadline_exceeded`` (with ``Retry-After``); ``None``: no deadline. Open the
            backend with the same ``statement_timeout`` so the database stops the work too.
        agent: answers chat turns; the offline ``DemoAgent`` if not given.
        require_user_header: 400 for requests without ``X-Muxi-User-Id``.
        allow_anonymous: keyless requests act for users of the default tenant (dev mode).
        export, forget: the admin functions behind the two admin endpoints.
        close_on_shutdown: close the backend when the server stops.
    """
    the_agent: Agent = agent if agent is not None else DemoAgent()
    backend, sessions = isolation.backend, isolation.sessions

    async def create_session(request: Request) -> Response:
        scope = _scope(request)
        data = await _json_object(request, optional=True)  # e.g. a body naming a user: 400
        _check_body(data)
        if data:
            raise _BadRequest(422, "invalid_request", f"unknown fields: {sorted(data)}")

        async def make(receipt_for: ReceiptFor) -> dict[str, Any]:
            record = sessions.new_record(scope)
            body = {"id": record.id, "user_id": record.user_id}
            body["created_at"] = iso_time(record.created_at)
            await backend.ainsert_session(scope, record, receipt=receipt_for(body))
            return body

        return await _once(backend, request, scope, data, 201, make)

    async def list_sessions(request: Request) -> Response:
        records = await sessions.alist(_scope(request))
        return JSONResponse({"sessions": [_session_json(r) for r in records]})

    async def get_session(request: Request) -> Response:
        scope = _scope(request)
        record = await sessions.aget(scope, request.path_params["session_id"])
        messages = await backend.aget_messages(record.scope.with_session(record.id))
        return JSONResponse(_history_json(record, messages))

    async def delete_session(request: Request) -> Response:
        await sessions.adelete(_scope(request), request.path_params["session_id"])
        return Response(status_code=204)

    async def chat(request: Request) -> Response:
        scope = _scope(request)
        data = await _json_object(request)
        # Every field is checked before anything is written: a refused turn leaves nothing.
        text = _field(data, "message", str, required=True)
        if not text.strip():
            raise _BadRequest(422, "invalid_request", "'message' must not be empty")
        session_id = _field(data, "session_id", str)
        if session_id is not None:
            session_id = canonical_id(session_id, "session_id")
        metadata = policy.check_metadata(_field(data, "metadata", dict))
        _check_body(data)

        async def turn(receipt_for: ReceiptFor) -> dict[str, Any]:
            history: list[Message] = []
            create: SessionRecord | None = None
            if session_id is None:  # stored with the turn below: one write transaction
                record = create = sessions.new_record(scope)
            else:  # fail before the agent runs; the append below checks again, atomically
                record = await sessions.aactive(scope, session_id)
                history = await backend.aget_messages(
                    record.scope.with_session(record.id), last=HISTORY_WINDOW
                )
            turn_scope = record.scope.with_session(record.id)
            answer = await the_agent.respond(Turn(isolation, turn_scope, text, history))
            body = {"session_id": record.id, "user_id": record.user_id, "response": answer}
            now = sessions.clock()
            await backend.aappend_to_session(
                turn_scope,
                [Message("user", text, metadata), Message("assistant", answer)],
                now=now,
                expires_at=now + sessions.timeout,
                create=create,
                receipt=receipt_for(body),
            )
            return body

        return await _once(backend, request, scope, data, 200, turn)

    async def export_route(request: Request) -> Response:
        _require_admin(request)
        return JSONResponse(await export(isolation, Scope.parse(request.path_params["user_id"])))

    async def forget_route(request: Request) -> Response:
        _require_admin(request)
        return JSONResponse(await forget(isolation, Scope.parse(request.path_params["user_id"])))

    async def audit_route(request: Request) -> Response:
        _require_admin(request)
        query = _audit_query(request)
        found = await audit.aread_events(backend, query)
        await backend.audit.arecord("audit_read", audit.OK, query.tenant_id)
        return JSONResponse({"events": [e.to_dict() for e in found]})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            await backend.aclose()

    routes = [
        Route("/v1/sessions", create_session, methods=["POST"]),
        Route("/v1/sessions", list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id:path}", get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id:path}", delete_session, methods=["DELETE"]),
        Route("/v1/chat", chat, methods=["POST"]),
        Route("/v1/admin/users/{user_id:path}/export", export_route, methods=["GET"]),
        _UserRoute("/v1/admin/users/{user_id:path}", forget_route, methods=["DELETE"]),
        Route("/v1/admin/audit", audit_route, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    outages = OutageLog(log)
    middleware = [
        Middleware(_Deadline, timeout=request_timeout, outages=outages),
        Middleware(_AuditEdge, keys=keys, backend=backend),
        Middleware(
            MuxiIsolationMiddleware,
            keys=keys,
            require_user_header=require_user_header,
            allow_anonymous=allow_anonymous,
            public_paths=PUBLIC_PATHS,
            admin_paths=ADMIN_PATHS,
        ),
        Middleware(_AuditActor, backend=backend),
        Middleware(_RateLimit, limiter=RateLimiter(backend.limits)),
    ]
    handlers: dict[Any, Any] = {
        IsolationError: _isolation_error,
        _BadRequest: _bad_request,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan
    )
    app.state.outages = outages
    app.state.audited = backend
    return app


_AUDIT_BOX = "muxi_audit"  # in the ASGI scope: whether the request got past the key check
_AUDIT_LIMIT = 1000  # events per GET /v1/admin/audit at most


def _operation(scope: ASGIScope) -> str:
    return f"{scope.get('method', '')} {scope.get('path', '')}"[:64]


class _AuditEdge:
    """Record every request the key check refuses (401, 403) before it reaches a route:
    the actor is the key's id when the key is known, the subject the user the header
    names when it parses. Requests past the check are ``_AuditActor``'s."""

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
                    _operation(scope), audit.DENIED, self._subject(scope)
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


class _AuditActor:
    """Behind the key check: every call of the request names the key (``audit.acting``),
    and an admin key acting as a user (impersonation) is an event of its own."""

    def __init__(self, app: ASGIApp, backend: Backend) -> None:
        self.app, self.backend = app, backend

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
            if grant.level is AccessLevel.ADMIN and not path.startswith(ADMIN_PATHS):
                user = scope.get(SCOPE_KEY)
                subject = user if isinstance(user, Scope) else None
                await self.backend.audit.arecord("impersonate", audit.OK, subject, [path[:255]])
            await self.app(scope, receive, send)


def _audit_query(request: Request) -> audit.AuditQuery:
    """``tenant``, ``user`` (an id, or tenant:user), ``since`` (ISO 8601), ``outcome`` and
    ``limit`` (at most 1000, the default) from the query string."""
    params = request.query_params
    unknown = set(params) - {"tenant", "user", "since", "outcome", "limit"}
    if unknown:
        raise _BadRequest(422, "invalid_request", f"unknown parameters: {sorted(unknown)}")
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
            raise _BadRequest(422, "invalid_request", "'since' must be an ISO 8601 time") from None
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    outcome = params.get("outcome")
    if outcome is not None and outcome not in audit.OUTCOMES:
        raise _BadRequest(422, "invalid_request", f"'outcome' must be one of {audit.OUTCOMES}")
    limit = params.get("limit", str(_AUDIT_LIMIT))
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= _AUDIT_LIMIT:
        raise _BadRequest(422, "invalid_request", f"'limit' must be 1 to {_AUDIT_LIMIT}")
    return audit.AuditQuery(tenant, user, since, outcome, int(limit))


class _Deadline:
    """Answer 503 ``deadline_exceeded`` (with ``Retry-After``) when a request has not started
    its answer within ``timeout`` seconds, without waiting for it: the handler is cancelled,
    and its clean-up (which may wait on a frozen database) goes on alone. Its transaction
    never committed, so it is rolled back; the backend's ``statement_timeout`` makes the
    database stop the work too. Also tells ``outages`` of every answer below 500."""

    def __init__(self, app: ASGIApp, timeout: float | None, outages: OutageLog) -> None:
        self.app, self.timeout, self.outages = app, timeout, outages

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"status": 0, "answered": False}

        async def tracked(message: ASGIMessage) -> None:
            if state["answered"]:
                return  # we already answered for it
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracked))
        task.add_done_callback(_retrieved)
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if task in done or state["status"]:  # finished, or its answer is on its way
            await task
            if 0 < int(state["status"]) < 500:
                self.outages.succeeded()
            return
        state["answered"] = True
        task.cancel()
        exc = DeadlineExceeded(f"no answer within {self.timeout} s")
        self.outages.failed(exc)
        status, body = error_response(exc)
        await send_json(send, status, body, [(b"retry-after", RETRY_AFTER.encode())])


class _RateLimit:
    """``requests_per_minute`` per (tenant, user) on the user routes: 429 ``quota_exceeded``
    with ``Retry-After``. Inside the isolation middleware (it reads the resolved scope);
    admin endpoints and public paths are not counted. The buckets live in this process."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        user = scope.get(SCOPE_KEY)
        path = str(scope.get("path", ""))
        if isinstance(user, Scope) and not path.startswith(ADMIN_PATHS):
            try:
                self.limiter.take(user.tenant_id, user.user_id)
            except QuotaExceeded as exc:
                wait = str(exc.retry_after or 1).encode()
                await send_json(send, *error_response(exc), [(b"retry-after", wait)])
                return
        await self.app(scope, receive, send)


def _retrieved(task: asyncio.Future[None]) -> None:
    """A handler cancelled at its deadline may still fail while cleaning up: seen here."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a request past its deadline failed afterwards", exc_info=task.exception())


class _UserRoute(Route):
    """``/v1/admin/users/{user_id}``, except the export URL: ``{user_id:path}`` would take
    ``a/export`` as a user, so a DELETE there would forget user ``a/export`` instead of being
    a wrong method (405). A user id holding ``/`` arrives encoded (``%2F``), so the raw path
    tells the two apart."""

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        if scope.get("raw_path", b"").endswith(b"/export"):
            return Match.NONE, {}
        return super().matches(scope)


async def _isolation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IsolationError)
    status, body = error_response(exc)
    if status in (400, 401, 403) and audit.refusal(exc) and not audit.recorded(exc):
        backend: Backend = request.app.state.audited
        user = request.scope.get(SCOPE_KEY)
        subject = user if isinstance(user, Scope) else None
        await backend.audit.arecord(_operation(request.scope), audit.DENIED, subject)
    if status >= 500:
        request.app.state.outages.failed(exc)  # one trace, then a summary line per cause
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    if isinstance(exc, QuotaExceeded) and exc.retry_after is not None:
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(body, status_code=status, headers=headers)


def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BadRequest)
    return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=exc.status)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return JSONResponse(
        {"error": code, "message": exc.detail}, status_code=exc.status_code, headers=headers
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's own 405 names only the
    first route that matched the path, and our paths have a route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal_error", "message": "internal error"}, status_code=500)


# -- OpenAPI ----------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


# What ``canonical_id`` accepts, as patterns both JSON Schema (ECMA-262) and Python read the
# same way: no control character (Cc) or line/paragraph separator, no whitespace at either
# end (``str.strip``'s whitespace, spelled out: ECMA's ``\s`` is not Python's), 1-255 long.
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_SPACE = r"\x20\xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
_WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _id_pattern(exclude: str = "") -> str:
    edge, inner = f"[^{_CONTROL}{_SPACE}{exclude}]", f"[^{_CONTROL}{exclude}]"
    return f"{edge}(?:{inner}{{0,253}}{edge})?"


ID_PATTERN = f"^{_id_pattern()}$"
# tenant:user split at the first ':' (a tenant never holds one), or a default-tenant user.
USER_PATTERN = f"^{_id_pattern(':')}(?::{_id_pattern()})?$"
# No NUL in body text. Lone surrogates (``"\ud800"`` in JSON) are 400 too, but a pattern
# cannot tell them from pairs in both dialects; the 400 response says so.
_NO_NUL = r"^[^\x00]*$"


_EVENT_IDS = ("tenant_id", "user_id", "session_id")


def _audit_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    ids = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 255}
    return [
        query("tenant", ids, "Only this tenant's events"),
        query(
            "user",
            {**ids, "pattern": USER_PATTERN, "maxLength": 511},
            "Only this user's: a user id, or tenant:user",
        ),
        query("since", {"type": "string", "format": "date-time"}, "Only events from then on"),
        query("outcome", {"type": "string", "enum": list(audit.OUTCOMES)}, "Only this outcome"),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": _AUDIT_LIMIT},
            f"At most this many events (default {_AUDIT_LIMIT})",
        ),
    ]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this server, exact enough for a fuzzer: every request
    it allows is accepted, every one it forbids refused, every status it can answer listed
    (``tests/test_http_contract.py`` runs Schemathesis against the live server)."""
    session_id = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 255},
    }
    user_path = {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": USER_PATTERN, "minLength": 1, "maxLength": 511},
        "description": "The user's X-Muxi-User-Id value, percent-encoded (tenant_a%3Auser_1).",
    }
    user_header = {
        "name": "X-Muxi-User-Id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": USER_PATTERN, "minLength": 1, "maxLength": 511},
        "description": 'tenant:user, or a user of the default tenant; none means user "0". '
        "Ids are NFC, 1-255 characters, without control characters or whitespace at either "
        "end; a tenant id holds no ':'. Anything else, or the header sent twice, is 400.",
    }
    base = [{"$ref": "#/components/parameters/UserId"}]
    once = [*base, {"$ref": "#/components/parameters/IdempotencyKey"}]
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 255},
        "description": "The caller's own key for this request: a retry with the same key and "
        "body gets the first answer (Idempotent-Replayed: true) and writes nothing; the same "
        "key with another body is 422 idempotency_key_reused. An id: 400 if malformed.",
    }
    replayed = {
        "Idempotent-Replayed": {
            "description": "true: this is the stored answer to an earlier request",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    common = _errors(400, 401, 403, 503)
    user_route = {**common, **_errors(429)}  # the rate limit counts every user route
    text = {"type": "string"}
    time_field = {"type": "string", "format": "date-time"}
    json_value = _ref("JsonValue")
    no_nul = {"type": "string", "pattern": _NO_NUL}
    error_texts = {
        400: "Malformed id, a body naming a user or reserved keys, text no backend can store "
        "(NUL, a lone surrogate) or NaN, or not JSON",
        401: "Missing or unknown key",
        403: "Key not allowed for this user or call (an admin key on a user route)",
        404: "No such session for this user, or no route for the path (an id holding a line "
        "break or a dot segment)",
        410: "The session has expired",
        413: "Body too large",
        422: "JSON of the wrong shape",
        409: "A request with the same Idempotency-Key is still being stored",
        429: "quota_exceeded: the rate limit (with Retry-After seconds), or a count or size "
        "limit of the user (limit names it)",
        503: "Storage unavailable, or no answer within the server's deadline; retry after "
        "Retry-After seconds",
    }
    responses = {f"E{s}": _json(_ref("Error"), d) for s, d in error_texts.items()}
    responses["E503"]["headers"] = {
        "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "muxi-isolation reference server", "version": "0.1.0"},
        "security": [{"ClientKey": []}],
        "paths": {
            "/v1/sessions": {
                "post": {
                    "summary": "Create a session for the caller",
                    "parameters": once,
                    "requestBody": {
                        "required": False,
                        **_json(
                            {"type": "object", "maxProperties": 0},
                            "No body, or an empty object",
                        ),
                    },
                    "responses": {
                        "201": {**_json(_ref("NewSession"), "Created"), "headers": replayed},
                        **user_route,
                        **_errors(409, 413, 422),
                    },
                },
                "get": {
                    "summary": "List the caller's sessions",
                    "parameters": base,
                    "responses": {"200": _json(_ref("SessionList"), "Sessions"), **user_route},
                },
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "summary": "A session and its history",
                    "parameters": [*base, session_id],
                    "responses": {
                        "200": _json(_ref("SessionHistory"), "History"),
                        **user_route,
                        **_errors(404),
                    },
                },
                "delete": {
                    "summary": "Delete a session and its messages",
                    "parameters": [*base, session_id],
                    "responses": {
                        "204": {"description": "Deleted"},
                        **user_route,
                        **_errors(404),
                    },
                },
            },
            "/v1/chat": {
                "post": {
                    "summary": "One chat turn; without session_id a new session is created",
                    "parameters": once,
                    "requestBody": {"required": True, **_json(_ref("ChatRequest"), "The turn")},
                    "responses": {
                        "200": {**_json(_ref("ChatResponse"), "The answer"), "headers": replayed},
                        **user_route,
                        **_errors(404, 409, 410, 413, 422),
                    },
                },
            },
            "/v1/admin/users/{user_id}/export": {
                "get": {
                    "summary": "Admin key: everything stored for a user",
                    "parameters": [user_path],
                    "responses": {
                        "200": _json(_ref("UserExport"), "The export"),
                        **common,
                        **_errors(404),
                    },
                },
            },
            "/v1/admin/users/{user_id}": {
                "delete": {
                    "summary": "Admin key: delete every row of a user",
                    "parameters": [user_path],
                    "responses": {
                        "200": _json(_ref("ForgetResult"), "Counts"),
                        **common,
                        **_errors(404),
                    },
                },
            },
            "/v1/admin/audit": {
                "get": {
                    "summary": "Admin key: the audit trail's events, oldest first",
                    "parameters": _audit_parameters(),
                    "responses": {
                        "200": _json(_ref("AuditEvents"), "Events"),
                        **common,
                        **_errors(422),
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}, **_errors(503)},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "OK"}, **_errors(503)},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "ClientKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Muxi-Client-Key",
                    "description": "fmc_... (bound to one tenant) or fma_... (admin)",
                }
            },
            "parameters": {"UserId": user_header, "IdempotencyKey": idempotency_key},
            "responses": responses,
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "A stable code"},
                        "message": text,
                        "field": text,
                        "rule": text,
                        "session_id": text,
                        "limit": text,
                        "allowed": {"type": "integer"},
                        "retry_after": {"type": "integer"},
                    },
                },
                "JsonValue": {
                    "description": "Any JSON value whose strings and keys hold no NUL",
                    "anyOf": [
                        no_nul,
                        {"type": ["number", "boolean", "null"]},
                        {"type": "array", "items": json_value},
                        {
                            "type": "object",
                            "propertyNames": no_nul,
                            "additionalProperties": json_value,
                        },
                    ],
                },
                "NewSession": {
                    "type": "object",
                    "required": ["id", "user_id", "created_at"],
                    "properties": {"id": text, "user_id": text, "created_at": time_field},
                },
                "Session": {
                    "type": "object",
                    "properties": {
                        "id": text,
                        "user_id": text,
                        "created_at": time_field,
                        "last_active_at": time_field,
                        "expires_at": time_field,
                    },
                },
                "SessionList": {
                    "type": "object",
                    "properties": {"sessions": {"type": "array", "items": _ref("Session")}},
                },
                "Message": {
                    "type": "object",
                    "properties": {
                        "seq": {"type": "integer"},
                        "role": text,
                        "content": {},
                        "metadata": {"type": "object"},
                        "tool_calls": {"type": "array"},
                        "status": text,
                        "created_at": time_field,
                    },
                },
                "SessionHistory": {
                    "allOf": [
                        _ref("Session"),
                        {
                            "type": "object",
                            "properties": {"messages": {"type": "array", "items": _ref("Message")}},
                        },
                    ]
                },
                "ChatRequest": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": {
                            "type": "string",
                            "pattern": f"^[^\\x00]*[^\\x00{_WHITESPACE}][^\\x00]*$",
                            "description": "Not blank",
                        },
                        "session_id": {
                            "type": ["string", "null"],
                            "pattern": ID_PATTERN,
                            "minLength": 1,
                            "maxLength": 255,
                            "description": "The caller's session; absent or null: a new one",
                        },
                        "metadata": {
                            "type": ["object", "null"],
                            "description": "Stored with the user's message (null: none)",
                            "propertyNames": {
                                **no_nul,
                                "not": {"enum": sorted(policy.RESERVED_KEYS)},
                            },
                            "additionalProperties": json_value,
                        },
                    },
                    # Other fields are checked like the rest and ignored; naming a user is 400.
                    "propertyNames": {**no_nul, "not": {"enum": sorted(_BODY_SCOPE_FIELDS)}},
                    "additionalProperties": json_value,
                },
                "ChatResponse": {
                    "type": "object",
                    "properties": {"session_id": text, "user_id": text, "response": text},
                },
                "UserExport": {
                    "type": "object",
                    "properties": {
                        "user_id": text,
                        "tenant_id": text,
                        "sessions": {"type": "array", "items": _ref("SessionHistory")},
                        "memories": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "AuditEvents": {
                    "type": "object",
                    "properties": {"events": {"type": "array", "items": _ref("AuditEvent")}},
                },
                "AuditEvent": {
                    "type": "object",
                    "properties": {
                        "at": time_field,
                        **{k: {"type": ["string", "null"]} for k in _EVENT_IDS},
                        **{k: text for k in ("actor", "interface", "operation", "outcome")},
                        "targets": {"type": "array", "items": text},
                        "seq": {"type": "integer"},
                        **{k: text for k in ("prev_hash", "hash")},
                    },
                },
                "ForgetResult": {
                    "type": "object",
                    "properties": {
                        "user_id": text,
                        "deleted": {"type": "object", "additionalProperties": {"type": "integer"}},
                    },
                },
            },
        },
    }


# -- running it -------------------------------------------------------------------------------


def _config(app: Starlette, log_level: str, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, ws="none", lifespan="on", log_level=log_level, **options)


def run_server(app: Starlette, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve ``app`` until interrupted (Ctrl-C or SIGTERM)."""
    uvicorn.Server(_config(app, "info", host=host, port=port)).run()


@contextmanager
def serve_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread (port 0: a free one); yields the base URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_config(app, log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        bound = sock.getsockname()[1]
        yield f"http://[{host}]:{bound}" if family == socket.AF_INET6 else f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
