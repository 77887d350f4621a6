"""The HTTP edge: an ASGI middleware that turns request headers into a Scope, once.

    X-Muxi-Client-Key: fmc_...          which key; a client key is bound to one tenant
    X-Muxi-User-Id: tenant_a:user_1     who the request acts for (none: user "0")

Checks run in this order, so an unauthenticated caller learns nothing about ids:

1. the key: missing or unknown is 401 ``unauthorized``;
2. the user id: malformed is 400 ``invalid_user_id`` (``missing_user_id`` when the app
   requires the header and it is absent);
3. the pair: a client key acting for a user of another tenant is 403 ``forbidden``, and
   so is an admin key anywhere but under ``admin_paths``.

An admin key (``fma_...``) goes in the same header. It may call the admin endpoints (under
``admin_paths``, which check for it themselves: the grant is in the ASGI scope under
``muxi.grant``) and nothing else; only a key registered with impersonation
(``auth.admin_impersonation: true``) may also act as the user its header names, and every
such request is logged (WARNING on ``muxi_isolation.http``) with the key's id and the user.
The resolved scope is put in the ASGI scope (``scope["muxi.scope"]`` and
``scope["state"]["muxi_scope"]``, which Starlette shows as ``request.state.muxi_scope``)
and set with ``context.use_scope`` while the downstream app runs. A scope already set
around the middleware (``use_scope``, an outer middleware) is a second source of the same
rule every adapter applies (``context.resolve``): naming another user than the header is
400 ``scope_violation``, after the key and pair checks.

Plain ASGI, no framework imported: it works under Starlette, FastAPI or any ASGI app.
``ERROR_STATUS`` is the one table from typed errors to HTTP statuses and stable codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import context, errors
from ._asgi_types import ASGIApp, Message, Receive, Scope, Send
from .context import use_scope
from .keys import AccessLevel, Grant, KeyRing
from .scope import DEFAULT_TENANT
from .scope import Scope as IsolationScope

__all__ = [
    "ANONYMOUS",
    "ERROR_STATUS",
    "GRANT_KEY",
    "KEY_HEADER",
    "RETRY_AFTER",
    "SCOPE_KEY",
    "USER_HEADER",
    "MuxiIsolationMiddleware",
    "error_response",
    "error_status",
    "send_json",
]

log = logging.getLogger("muxi_isolation.http")

USER_HEADER = "X-Muxi-User-Id"
KEY_HEADER = "X-Muxi-Client-Key"
SCOPE_KEY = "muxi.scope"
GRANT_KEY = "muxi.grant"

ANONYMOUS = Grant(AccessLevel.CLIENT, DEFAULT_TENANT)
"""The grant of a keyless request when the app allows them: a default-tenant client."""

ERROR_STATUS: Mapping[type[errors.IsolationError], tuple[int, str]] = {
    errors.SessionNotFound: (404, "session_not_found"),
    errors.SessionExpired: (410, "session_expired"),
    errors.SessionExists: (409, "session_exists"),
    errors.SessionError: (400, "session_error"),
    errors.InvalidIdentifier: (400, "invalid_identifier"),
    errors.ReservedKey: (400, "reserved_key"),
    errors.ScopeViolation: (400, "scope_violation"),
    errors.InvalidFilter: (400, "invalid_filter"),
    errors.KeyReused: (422, "idempotency_key_reused"),
    errors.InvalidInput: (400, "invalid_input"),
    errors.DuplicateRequest: (409, "duplicate_request"),
    errors.QuotaExceeded: (429, "quota_exceeded"),
    errors.AccessDenied: (401, "unauthorized"),
    errors.Forbidden: (403, "forbidden"),
    errors.DeadlineExceeded: (503, "deadline_exceeded"),
    errors.StorageUnavailable: (503, "storage_unavailable"),
    errors.UnsupportedOperation: (500, "unsupported_operation"),  # the server's backend lacks it
    errors.StorageError: (503, "storage_error"),
    errors.MissingScope: (500, "missing_scope"),
    errors.ConfigError: (500, "config_error"),
    errors.AdapterUnavailable: (500, "adapter_unavailable"),
    errors.UnsupportedStore: (500, "unsupported_store"),
    errors.UnreadableSource: (400, "unreadable_source"),
    errors.IsolationError: (500, "internal_error"),
}

# Server-side failures get a fixed message: a driver's text is for the log, not the client.
_PUBLIC_MESSAGES = {503: "storage is unavailable; try again later", 500: "internal error"}
RETRY_AFTER = "1"  # seconds: sent with every 503, which a client may retry
_REQUIRED = "the X-Muxi-User-Id header is required"


def error_status(exc: errors.IsolationError) -> tuple[int, str]:
    """The HTTP status and stable error code of ``exc``: its most specific table entry."""
    for cls in type(exc).__mro__:
        if issubclass(cls, errors.IsolationError) and cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return ERROR_STATUS[errors.IsolationError]


def error_response(exc: errors.IsolationError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for ``exc``: ``{"error": code, "message": ..., ...}``."""
    status, code = error_status(exc)
    body: dict[str, Any] = {"error": code, "message": _PUBLIC_MESSAGES.get(status, str(exc))}
    if isinstance(exc, errors.InvalidIdentifier):
        body["rule"] = exc.rule
    if isinstance(exc, errors.InvalidInput) and exc.field is not None:
        body["field"] = exc.field
    if isinstance(exc, (errors.KeyReused, errors.DuplicateRequest)):
        body["key"] = exc.key
    if isinstance(exc, (errors.SessionNotFound, errors.SessionExpired, errors.SessionExists)):
        body["session_id"] = exc.session_id
    if isinstance(exc, errors.QuotaExceeded):
        body.update(limit=exc.limit, allowed=exc.allowed)
        if exc.retry_after is not None:
            body["retry_after"] = exc.retry_after
    return status, body


async def send_json(
    send: Send,
    status: int,
    body: Mapping[str, Any],
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _one(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [value for key, value in headers if key.lower() == name]
    if len(values) > 1:
        raise _Duplicate(name.decode())
    return values[0] if values else None


class _Duplicate(Exception):
    """A header sent twice: ambiguous about who the request is for, so refused."""


class MuxiIsolationMiddleware:
    """Resolve and check the scope of every HTTP request; pass everything else through.

    Args:
        app: the downstream ASGI app.
        keys: the keys this server accepts.
        require_user_header: refuse requests without ``X-Muxi-User-Id`` (400) instead of
            acting for user ``"0"``.
        allow_anonymous: let requests without a key act as users of the default tenant
            (MUXI's single-user development mode); a wrong key is still 401.
        public_paths: exact paths served without any check (no scope is set there).
        admin_paths: path prefixes of the admin endpoints, the only place an admin key
            goes without impersonation (the endpoints check the key's level themselves).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        require_user_header: bool = False,
        *,
        allow_anonymous: bool = False,
        public_paths: Sequence[str] = (),
        admin_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.require_user_header = require_user_header
        self.allow_anonymous = allow_anonymous
        self.public_paths = frozenset(public_paths)
        self.admin_paths = tuple(admin_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.public_paths:
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        try:
            resolved, grant = self.resolve(scope.get("headers") or [], path=path)
        except errors.IsolationError as exc:
            await send_json(send, *self._rejection(exc))
            return
        if grant.level is AccessLevel.ADMIN and not self._admin_path(path):
            log.warning(
                "admin key %s acts as user %r: %s %s",
                grant.key_id,
                resolved.header,
                scope.get("method", ""),
                path,
            )
        child = dict(scope)
        child[SCOPE_KEY] = resolved
        child[GRANT_KEY] = grant
        child["state"] = {**(scope.get("state") or {}), "muxi_scope": resolved}
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with use_scope(resolved):
            try:
                await self.app(child, receive, tracking_send)
            except errors.IsolationError as exc:
                if started:
                    raise
                log.info("request failed: %r", exc)
                await send_json(send, *error_response(exc))

    def resolve(
        self, headers: Iterable[tuple[bytes, bytes]], *, path: str = ""
    ) -> tuple[IsolationScope, Grant]:
        """The scope and grant for a request's raw ASGI headers, or a typed error.

        An admin key passes on ``path`` under ``admin_paths``; anywhere else (or with no
        path given) it must be allowed to impersonate the user its header names.
        """
        headers = list(headers)
        try:
            key = _one(headers, KEY_HEADER.lower().encode())
        except _Duplicate as exc:
            raise errors.AccessDenied(f"send {exc} once") from None
        if key is None and self.allow_anonymous:
            grant = ANONYMOUS
        else:
            grant = self.keys.identify(None if key is None else key.decode("latin-1"))
        scope = self._scope(headers)
        if grant is ANONYMOUS:
            if scope.tenant_id != DEFAULT_TENANT:
                raise errors.Forbidden(
                    "a request without a key may only act for the default tenant"
                )
        elif not (grant.level is AccessLevel.ADMIN and self._admin_path(path)):
            # (an admin endpoint names its user in the path and checks the level itself)
            grant.allow(scope)  # the grant already found: the key is hashed and looked up once
        context.resolve(scope)  # a scope set around this app must be the header's
        return scope, grant

    def _admin_path(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.admin_paths)

    def _scope(self, headers: list[tuple[bytes, bytes]]) -> IsolationScope:
        try:
            raw = _one(headers, USER_HEADER.lower().encode())
        except _Duplicate as exc:
            raise errors.InvalidIdentifier("user_id", f"send {exc} once") from None
        if raw is None:
            if self.require_user_header:
                raise errors.InvalidIdentifier("user_id", _REQUIRED)
            return IsolationScope.parse(None)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidIdentifier("user_id", "must be UTF-8") from None
        return IsolationScope.parse(text)

    @staticmethod
    def _rejection(exc: errors.IsolationError) -> tuple[int, dict[str, Any]]:
        status, body = error_response(exc)
        if isinstance(exc, errors.InvalidIdentifier):
            body["error"] = "missing_user_id" if exc.rule == _REQUIRED else "invalid_user_id"
        return status, body
