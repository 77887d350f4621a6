"""How the server answers a request that failed: every error is JSON ``{"error": code,
"message": ...}``, typed errors through the one table in ``muxi_isolation.http``."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from . import audit
from ._audit_edge import operation
from ._requests import BadRequest
from .errors import IsolationError, QuotaExceeded
from .http import RETRY_AFTER, SCOPE_KEY, error_response
from .scope import Scope
from .stores.base import Backend

__all__ = ["EXCEPTION_HANDLERS"]


async def _isolation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IsolationError)
    status, body = error_response(exc)
    if status in (400, 401, 403) and audit.refusal(exc) and not audit.recorded(exc):
        backend: Backend = request.app.state.audited
        user = request.scope.get(SCOPE_KEY)
        subject = user if isinstance(user, Scope) else None
        await backend.audit.arecord(operation(request.scope), audit.DENIED, subject)
    if status >= 500:
        request.app.state.outages.failed(exc)  # one trace, then a summary line per cause
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    if isinstance(exc, QuotaExceeded) and exc.retry_after is not None:
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(body, status_code=status, headers=headers)


def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
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


# Starlette's exception_handlers: the most specific class that matches answers.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    IsolationError: _isolation_error,
    BadRequest: _bad_request,
    HTTPException: _http_error,
    Exception: _internal_error,
}
