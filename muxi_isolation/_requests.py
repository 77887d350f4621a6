"""Reading a request for the server's routes: who it acts for, its body as a checked JSON
object, its fields. Whatever cannot be read is ``BadRequest`` (answered as JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._input import check_json, check_text
from .errors import AccessDenied, ScopeViolation
from .http import ANONYMOUS, GRANT_KEY, SCOPE_KEY
from .keys import Grant
from .scope import Scope

if TYPE_CHECKING:  # only a type here: the OpenAPI loader imports this module without the extra
    from starlette.requests import Request

__all__ = [
    "BODY_SCOPE_FIELDS",
    "MAX_BODY_BYTES",
    "BadRequest",
    "check_body",
    "field",
    "json_object",
    "require_admin",
    "user_scope",
]

MAX_BODY_BYTES = 1 << 20
BODY_SCOPE_FIELDS = frozenset({"user_id", "tenant_id"})


class BadRequest(Exception):
    """A request the server cannot read (not JSON, wrong shape, too large)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def user_scope(request: Request) -> Scope:
    scope = request.scope.get(SCOPE_KEY)
    if not isinstance(scope, Scope):  # the middleware is missing: fail closed
        raise AccessDenied("no scope was resolved for this request")
    return scope


def require_admin(request: Request) -> None:
    grant = request.scope.get(GRANT_KEY)
    if not isinstance(grant, Grant) or grant is ANONYMOUS:
        raise AccessDenied("this call needs an admin key")
    grant.allow_admin()


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object naming no user (``optional``: no body at all is ``{}``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, "body_too_large", f"the body may be at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "body_too_large", "the body is too large")
    if optional and not body:
        return {}
    try:
        data = json.loads(bytes(body))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested deeply
        raise BadRequest(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "invalid_request", "the body must be a JSON object")
    named = BODY_SCOPE_FIELDS.intersection(data)
    if named:
        raise ScopeViolation(
            f"the body may not name {sorted(named)}: the user comes from X-Muxi-User-Id"
        )
    return data


def check_body(data: Mapping[str, Any]) -> None:
    """Every field of a body (known or not) is something every backend can store: NaN, NUL
    or a lone surrogate anywhere is ``InvalidInput`` naming the field."""
    for name, value in data.items():
        check_text(name, "a body field's name")
        check_json(value, name)


def field(data: Mapping[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(422, "invalid_request", f"'{name}' is required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(422, "invalid_request", f"'{name}' must be a {kind.__name__}")
    return value
