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

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from typing import Any

from .errors import AdapterUnavailable, DuplicateRequest

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Match, Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise AdapterUnavailable(exc.name or "starlette", "server") from exc

from . import audit, migrate, policy
from ._audit_edge import AuditActor, AuditEdge, audit_query
from ._edge import Deadline, RateLimit
from ._handlers import EXCEPTION_HANDLERS
from ._json_shapes import message_fields
from ._openapi import ID_PATTERN as ID_PATTERN  # re-exported: the contract tests read them
from ._openapi import USER_PATTERN as USER_PATTERN
from ._openapi import openapi_document, openapi_json
from ._requests import (
    MAX_BODY_BYTES,
    BadRequest,
    check_body,
    field,
    json_object,
    require_admin,
    user_scope,
)
from .agent import Agent, DemoAgent, Turn
from .facade import Isolation
from .http import MuxiIsolationMiddleware
from .idempotency import digest, replayed
from .keys import KeyRing
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

DEFAULT_REQUEST_TIMEOUT = 5.0  # seconds
HISTORY_WINDOW = 50
PUBLIC_PATHS = ("/openapi.json", "/health")
ADMIN_PATHS = ("/v1/admin/",)

Exporter = Callable[[Isolation, Scope], Awaitable[dict[str, Any]]]
Forgetter = Callable[[Isolation, Scope], Awaitable[dict[str, Any]]]


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


def _history_json(record: SessionRecord, messages: list[Message]) -> dict[str, Any]:
    return {**_session_json(record), "messages": [message_fields(m, iso_time) for m in messages]}


# -- admin functions: one each, swappable through create_app ---------------------------------


async def export_user(isolation: Isolation, user: Scope) -> dict[str, Any]:
    """Everything stored for ``user`` (``migrate.aexport_document``, the CLI's export as one
    JSON object): sessions with their messages, memories with their embeddings."""
    return await migrate.aexport_document(isolation.backend, user)


async def forget_user(isolation: Isolation, user: Scope) -> dict[str, Any]:
    """Delete every row of ``user`` (``migrate.aforget_user``); the counts deleted, by kind."""
    return (await migrate.aforget_user(isolation.backend, user)).to_dict()


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


# -- the routes -------------------------------------------------------------------------------


class _Endpoints:
    """The routes' handlers over one ``Isolation``; who a request acts for comes only from
    the scope the middleware resolved (``user_scope``), never from the body."""

    def __init__(
        self, isolation: Isolation, agent: Agent, export: Exporter, forget: Forgetter
    ) -> None:
        self.isolation, self.agent, self.export, self.forget = isolation, agent, export, forget
        self.backend, self.sessions = isolation.backend, isolation.sessions

    def routes(self) -> list[Route]:
        return [
            Route("/v1/sessions", self.create_session, methods=["POST"]),
            Route("/v1/sessions", self.list_sessions, methods=["GET"]),
            Route("/v1/sessions/{session_id:path}", self.get_session, methods=["GET"]),
            Route("/v1/sessions/{session_id:path}", self.delete_session, methods=["DELETE"]),
            Route("/v1/chat", self.chat, methods=["POST"]),
            Route("/v1/admin/users/{user_id:path}/export", self.export_route, methods=["GET"]),
            _UserRoute("/v1/admin/users/{user_id:path}", self.forget_route, methods=["DELETE"]),
            Route("/v1/admin/audit", self.audit_route, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]

    async def create_session(self, request: Request) -> Response:
        scope = user_scope(request)
        data = await json_object(request, optional=True)  # e.g. a body naming a user: 400
        check_body(data)
        if data:
            raise BadRequest(422, "invalid_request", f"unknown fields: {sorted(data)}")

        async def make(receipt_for: ReceiptFor) -> dict[str, Any]:
            record = self.sessions.new_record(scope)
            body = {"id": record.id, "user_id": record.user_id}
            body["created_at"] = iso_time(record.created_at)
            await self.backend.ainsert_session(scope, record, receipt=receipt_for(body))
            return body

        return await _once(self.backend, request, scope, data, 201, make)

    async def list_sessions(self, request: Request) -> Response:
        records = await self.sessions.alist(user_scope(request))
        return JSONResponse({"sessions": [_session_json(r) for r in records]})

    async def get_session(self, request: Request) -> Response:
        scope = user_scope(request)
        sid = canonical_id(request.path_params["session_id"], "session_id")
        # One read, one snapshot: the session (expired too) and its whole history.
        record, messages = await self.backend.aread_turn(scope, sid, now=None, last=None)
        return JSONResponse(_history_json(record, messages))

    async def delete_session(self, request: Request) -> Response:
        await self.sessions.adelete(user_scope(request), request.path_params["session_id"])
        return Response(status_code=204)

    async def chat(self, request: Request) -> Response:
        scope = user_scope(request)
        data = await json_object(request)
        # Every field is checked before anything is written: a refused turn leaves nothing.
        text = field(data, "message", str, required=True)
        if not text.strip():
            raise BadRequest(422, "invalid_request", "'message' must not be empty")
        session_id = field(data, "session_id", str)
        if session_id is not None:
            session_id = canonical_id(session_id, "session_id")
        metadata = policy.check_metadata(field(data, "metadata", dict))
        check_body(data)
        backend, sessions = self.backend, self.sessions

        async def turn(receipt_for: ReceiptFor) -> dict[str, Any]:
            history: list[Message] = []
            create: SessionRecord | None = None
            if session_id is None:  # stored with the turn below: one write transaction
                record = create = sessions.new_record(scope)
            else:  # fail before the agent runs; the append below checks again, atomically
                record, history = await backend.aread_turn(
                    scope, session_id, now=sessions.clock(), last=HISTORY_WINDOW
                )
            turn_scope = record.scope.with_session(record.id)
            answer = await self.agent.respond(Turn(self.isolation, turn_scope, text, history))
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

    async def export_route(self, request: Request) -> Response:
        require_admin(request)
        user = Scope.parse(request.path_params["user_id"])
        return JSONResponse(await self.export(self.isolation, user))

    async def forget_route(self, request: Request) -> Response:
        require_admin(request)
        user = Scope.parse(request.path_params["user_id"])
        return JSONResponse(await self.forget(self.isolation, user))

    async def audit_route(self, request: Request) -> Response:
        require_admin(request)
        query = audit_query(request.query_params)
        found = await audit.aread_events(self.backend, query)
        await self.backend.audit.arecord("audit_read", audit.OK, query.tenant_id)
        return JSONResponse({"events": [e.to_dict() for e in found]})

    @staticmethod
    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    @staticmethod
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})


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
    backend = isolation.backend
    the_agent: Agent = agent if agent is not None else DemoAgent()
    endpoints = _Endpoints(isolation, the_agent, export, forget)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            await backend.aclose()

    outages = OutageLog(log)
    middleware = [
        Middleware(Deadline, timeout=request_timeout, outages=outages),
        Middleware(AuditEdge, keys=keys, backend=backend),
        Middleware(
            MuxiIsolationMiddleware,
            keys=keys,
            require_user_header=require_user_header,
            allow_anonymous=allow_anonymous,
            public_paths=PUBLIC_PATHS,
            admin_paths=ADMIN_PATHS,
        ),
        Middleware(AuditActor, backend=backend, admin_paths=ADMIN_PATHS),
        Middleware(RateLimit, limiter=RateLimiter(backend.limits), admin_paths=ADMIN_PATHS),
    ]
    app = Starlette(
        routes=endpoints.routes(),
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.state.outages = outages
    app.state.audited = backend
    return app


class _UserRoute(Route):
    """``/v1/admin/users/{user_id}``, except the export URL: ``{user_id:path}`` would take
    ``a/export`` as a user, so a DELETE there would forget user ``a/export`` instead of being
    a wrong method (405). A user id holding ``/`` arrives encoded (``%2F``), so the raw path
    tells the two apart."""

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        if scope.get("raw_path", b"").endswith(b"/export"):
            return Match.NONE, {}
        return super().matches(scope)


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
