"""The ASGI middleware, under a plain ASGI app (no web framework), over httpx's ASGI transport."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from muxi_isolation import (
    AccessDenied,
    Forbidden,
    InvalidFilter,
    InvalidIdentifier,
    InvalidInput,
    IsolationError,
    KeyRing,
    MissingScope,
    MissingSecret,
    ReservedKey,
    Scope,
    ScopeViolation,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    StorageError,
    StorageUnavailable,
    current_scope,
    use_scope,
)
from muxi_isolation.http import (
    ANONYMOUS,
    ERROR_STATUS,
    GRANT_KEY,
    SCOPE_KEY,
    MuxiIsolationMiddleware,
    error_response,
    error_status,
)
from muxi_isolation.keys import AccessLevel, hash_key

KEY_DEFAULT = "fmc_default_tenant_key"
KEY_A = "fmc_tenant_a_key"
ADMIN = "fma_admin_key"


def ring() -> KeyRing:
    keys = KeyRing()
    keys.add_client_key("default", KEY_DEFAULT)
    keys.add_client_key("tenant_a", KEY_A)
    keys.add_admin_key(ADMIN)
    return keys


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Reports what the middleware handed down: scope dict entries and the context variable."""
    resolved: Scope = scope[SCOPE_KEY]
    body = json.dumps(
        {
            "tenant": resolved.tenant_id,
            "user": resolved.user_id,
            "level": scope[GRANT_KEY].level.value,
            "context_matches": current_scope() == resolved,
            "state_matches": scope["state"]["muxi_scope"] == resolved,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def get(headers: dict[str, str], **options: Any) -> httpx.Response:
    async with client(MuxiIsolationMiddleware(echo, ring(), **options)) as http:
        return await http.get("/anything", headers=headers)


async def raw_call(
    app: Any, headers: list[tuple[bytes, bytes]], path: str = "/x"
) -> tuple[int, dict[str, Any]]:
    """Call the middleware with raw header bytes, for values an HTTP client will not send."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


# -- the scope reaches the app ---------------------------------------------------------------


async def test_scope_is_set_in_the_asgi_scope_state_and_context() -> None:
    response = await get({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:user_1"})
    assert response.status_code == 200
    assert response.json() == {
        "tenant": "tenant_a",
        "user": "user_1",
        "level": "client",
        "context_matches": True,
        "state_matches": True,
    }


async def test_the_context_is_restored_after_the_request() -> None:
    assert current_scope() is None
    await get({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:user_1"})
    assert current_scope() is None


async def test_no_user_header_is_user_zero_of_the_default_tenant() -> None:
    response = await get({"X-Muxi-Client-Key": KEY_DEFAULT})
    assert response.json()["tenant"] == "default"
    assert response.json()["user"] == "0"


async def test_user_ids_are_canonicalized_and_utf8() -> None:
    decomposed = "jose\u0301"  # NFC gives the one-character é
    app = MuxiIsolationMiddleware(echo, ring())
    status, body = await raw_call(
        app,
        [
            (b"x-muxi-client-key", KEY_DEFAULT.encode()),
            (b"x-muxi-user-id", decomposed.encode("utf-8")),
        ],
    )
    assert status == 200
    assert body["user"] == "jos\u00e9"


# -- admin keys: admin paths only, unless impersonation is switched on -------------------------

IMPERSONATOR = "fma_impersonating_key"


def admin_ring() -> KeyRing:
    keys = ring()
    keys.add_admin_key(IMPERSONATOR, impersonate=True)
    return keys


@pytest.mark.parametrize("path", ["/anything", "/v1/sessions", "/v1/adminx", "/v1/admin"])
@pytest.mark.parametrize("user", [None, "tenant_b:user_9", "user_9"])
async def test_an_admin_key_is_forbidden_outside_the_admin_paths(
    path: str, user: str | None
) -> None:
    headers = {"X-Muxi-Client-Key": ADMIN} | ({"X-Muxi-User-Id": user} if user else {})
    app = MuxiIsolationMiddleware(echo, ring(), admin_paths=["/v1/admin/"])
    async with client(app) as http:
        response = await http.get(path, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert "admin_impersonation" in response.json()["message"]


async def test_an_admin_key_passes_under_the_admin_paths() -> None:
    app = MuxiIsolationMiddleware(echo, ring(), admin_paths=["/v1/admin/"])
    async with client(app) as http:
        response = await http.get("/v1/admin/users/x", headers={"X-Muxi-Client-Key": ADMIN})
    assert response.status_code == 200
    assert response.json()["level"] == "admin"


async def test_without_admin_paths_an_admin_key_is_forbidden_everywhere() -> None:
    response = await get({"X-Muxi-Client-Key": ADMIN, "X-Muxi-User-Id": "tenant_b:user_9"})
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    admin = [(b"x-muxi-client-key", ADMIN.encode())]
    for path in ("", "/v1/admin/users/x"):
        with pytest.raises(Forbidden):
            MuxiIsolationMiddleware(echo, ring()).resolve(admin, path=path)


async def test_an_impersonating_admin_key_acts_as_the_user_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = MuxiIsolationMiddleware(echo, admin_ring(), admin_paths=["/v1/admin/"])
    headers = {"X-Muxi-Client-Key": IMPERSONATOR, "X-Muxi-User-Id": "tenant_b:user_9"}
    with caplog.at_level(logging.WARNING, logger="muxi_isolation.http"):
        async with client(app) as http:
            acted = await http.get("/v1/sessions", headers=headers)
            admin = await http.get("/v1/admin/users/x", headers=headers)
    assert acted.status_code == admin.status_code == 200
    assert (acted.json()["tenant"], acted.json()["user"]) == ("tenant_b", "user_9")
    key_id = "sha256:" + hash_key(IMPERSONATOR)[:12]
    logged = [r.getMessage() for r in caplog.records if r.name == "muxi_isolation.http"]
    assert logged == [f"admin key {key_id} acts as user 'tenant_b:user_9': GET /v1/sessions"]
    assert IMPERSONATOR not in caplog.text


# -- refusals: a data table of attacks and mistakes ---------------------------------------------

REFUSALS = [
    # (headers, status, code)
    ({}, 401, "unauthorized"),
    ({"X-Muxi-User-Id": "tenant_a:user_1"}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": ""}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": "fmc_guessed"}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": KEY_A.upper()}, 401, "unauthorized"),
    # unauthenticated callers learn nothing about ids: 401 before 400
    ({"X-Muxi-Client-Key": "fmc_guessed", "X-Muxi-User-Id": " bad"}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_b:user_1"}, 403, "forbidden"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "user_1"}, 403, "forbidden"),
    ({"X-Muxi-Client-Key": KEY_A}, 403, "forbidden"),
    ({"X-Muxi-Client-Key": KEY_DEFAULT, "X-Muxi-User-Id": "tenant_a:user_1"}, 403, "forbidden"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:"}, 400, "invalid_user_id"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": ":user_1"}, 400, "invalid_user_id"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a: user_1"}, 400, "invalid_user_id"),
    (
        {"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:" + "u" * 256},
        400,
        "invalid_user_id",
    ),
]


@pytest.mark.parametrize(("headers", "status", "code"), REFUSALS)
async def test_refusals(headers: dict[str, str], status: int, code: str) -> None:
    response = await get(headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert response.json()["message"]


KEY = b"x-muxi-client-key"
USER = b"x-muxi-user-id"
RAW_REFUSALS = [
    # header bytes an HTTP client would refuse to send, but an attacker can
    ([(KEY, KEY_A.encode()), (USER, b"tenant_a:user\x001")], 400, "invalid_user_id"),
    ([(KEY, KEY_A.encode()), (USER, b"tenant_a:user\x1b1")], 400, "invalid_user_id"),
    ([(KEY, KEY_A.encode()), (USER, b"tenant_a:\xff\xfe")], 400, "invalid_user_id"),
    (
        [(KEY, KEY_A.encode()), (USER, b"tenant_a:u1"), (USER, b"tenant_a:u2")],
        400,
        "invalid_user_id",
    ),
    ([(KEY, KEY_A.encode()), (KEY, ADMIN.encode()), (USER, b"tenant_b:u1")], 401, "unauthorized"),
]


@pytest.mark.parametrize(("headers", "status", "code"), RAW_REFUSALS)
async def test_raw_header_refusals(
    headers: list[tuple[bytes, bytes]], status: int, code: str
) -> None:
    got_status, body = await raw_call(MuxiIsolationMiddleware(echo, ring()), headers)
    assert (got_status, body["error"]) == (status, code)


async def test_a_scope_set_around_the_app_must_name_the_headers_user() -> None:
    """The one scope rule at the edge: a scope already set (``use_scope``, an outer
    middleware) and the header are two sources; another user is refused, unnamed."""
    app = MuxiIsolationMiddleware(echo, ring())
    headers = [(KEY, KEY_A.encode()), (USER, b"tenant_a:alice")]
    for other in (Scope("tenant_a", "bob"), Scope("default", "alice")):
        with use_scope(other):
            status, body = await raw_call(app, headers)
        assert (status, body["error"]) == (400, "scope_violation")
        assert "bob" not in body["message"] and "alice" not in body["message"]
    with use_scope(Scope("tenant_a", "alice", "sess_1")):
        status, body = await raw_call(app, headers)
    assert (status, body["user"]) == (200, "alice")
    with use_scope(Scope("tenant_a", "bob")):  # checked after the key: a bad key learns nothing
        status, body = await raw_call(app, [(KEY, b"fmc_wrong"), (USER, b"tenant_a:alice")])
    assert (status, body["error"]) == (401, "unauthorized")


async def test_a_required_user_header_is_required() -> None:
    response = await get({"X-Muxi-Client-Key": KEY_DEFAULT}, require_user_header=True)
    assert response.status_code == 400
    assert response.json()["error"] == "missing_user_id"
    ok = await get(
        {"X-Muxi-Client-Key": KEY_DEFAULT, "X-Muxi-User-Id": "u"}, require_user_header=True
    )
    assert ok.status_code == 200


# -- anonymous (single-user development) mode ---------------------------------------------------


async def test_anonymous_requests_act_for_the_default_tenant_only() -> None:
    ok = await get({"X-Muxi-User-Id": "user_123"}, allow_anonymous=True)
    assert ok.status_code == 200
    assert (ok.json()["tenant"], ok.json()["user"]) == ("default", "user_123")
    other = await get({"X-Muxi-User-Id": "tenant_a:user_1"}, allow_anonymous=True)
    assert (other.status_code, other.json()["error"]) == (403, "forbidden")
    wrong = await get({"X-Muxi-Client-Key": "fmc_wrong"}, allow_anonymous=True)
    assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")


async def test_anonymous_grant_is_a_default_tenant_client() -> None:
    assert ANONYMOUS.level is AccessLevel.CLIENT
    assert ANONYMOUS.tenant_id == "default"


# -- pass-through -------------------------------------------------------------------------------


async def test_non_http_scopes_are_passed_straight_through() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware = MuxiIsolationMiddleware(app, KeyRing())
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await middleware(lifespan, None, None)  # type: ignore[arg-type]
    assert seen == [lifespan]
    assert seen[0] is lifespan


async def test_public_paths_skip_the_checks_and_set_no_scope() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert SCOPE_KEY not in scope
        assert current_scope() is None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"public"})

    middleware = MuxiIsolationMiddleware(app, KeyRing(), public_paths=["/health"])
    async with client(middleware) as http:
        assert (await http.get("/health")).text == "public"
        assert (await http.get("/health/x")).status_code == 401


# -- typed errors from the app, and the one status table ----------------------------------------


async def test_a_typed_error_from_the_app_becomes_json() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise SessionNotFound("sess_x")

    async with client(MuxiIsolationMiddleware(app, ring())) as http:
        response = await http.get("/", headers={"X-Muxi-Client-Key": KEY_DEFAULT})
    assert response.status_code == 404
    assert response.json() == {
        "error": "session_not_found",
        "message": "session not found: 'sess_x'",
        "session_id": "sess_x",
    }


async def test_an_error_after_the_response_started_propagates() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise SessionNotFound("sess_x")

    transport = httpx.ASGITransport(app=MuxiIsolationMiddleware(app, ring()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        with pytest.raises(SessionNotFound):
            await http.get("/", headers={"X-Muxi-Client-Key": KEY_DEFAULT})


STATUSES = [
    (SessionNotFound("s"), 404, "session_not_found"),
    (SessionExpired("s"), 410, "session_expired"),
    (SessionExists("s"), 409, "session_exists"),
    (InvalidIdentifier("session_id", "must not be empty"), 400, "invalid_identifier"),
    (ReservedKey("muxi_user_id"), 400, "reserved_key"),
    (ScopeViolation("x"), 400, "scope_violation"),
    (InvalidFilter("x"), 400, "invalid_filter"),
    (InvalidInput("x", field="message"), 400, "invalid_input"),
    (AccessDenied("x"), 401, "unauthorized"),
    (Forbidden("x"), 403, "forbidden"),
    (StorageError("x"), 503, "storage_error"),
    (StorageUnavailable("x"), 503, "storage_unavailable"),
    (MissingScope("x"), 500, "missing_scope"),
    (IsolationError("x"), 500, "internal_error"),
    (MissingSecret("OPENAI_KEY"), 500, "config_error"),  # shares its parent's entry
]


class TenantSuspended(Forbidden):
    """An app's own refinement of one of our errors."""


class QuotaHit(IsolationError):
    """An app's own error straight under the root."""


@pytest.mark.parametrize(("exc", "status", "code"), STATUSES)
def test_the_status_table(exc: IsolationError, status: int, code: str) -> None:
    got_status, body = error_response(exc)
    assert (got_status, body["error"]) == (status, code)


def test_an_apps_own_subclass_gets_its_nearest_entry() -> None:
    assert error_status(TenantSuspended("tenant_a is suspended")) == (403, "forbidden")
    assert error_status(QuotaHit("slow down")) == (500, "internal_error")


def test_every_error_class_has_its_own_entry() -> None:
    import muxi_isolation.errors as errors

    classes = {getattr(errors, name) for name in errors.__all__}
    # MissingSecret is a ConfigError and shares its entry; every other class has its own.
    assert classes - set(ERROR_STATUS) == {errors.MissingSecret}


def test_server_failures_do_not_leak_details() -> None:
    status, body = error_response(StorageUnavailable("could not connect: password=hunter2"))
    assert status == 503
    assert "hunter2" not in json.dumps(body)


def test_identifier_errors_name_the_field_and_rule() -> None:
    _, body = error_response(InvalidIdentifier("session_id", "must not be empty"))
    assert body["field"] == "session_id"
    assert body["rule"] == "must not be empty"


def test_input_errors_name_the_field() -> None:
    _, body = error_response(InvalidInput("message must not contain NUL", field="message"))
    assert (body["error"], body["field"]) == ("invalid_input", "message")
    assert "field" not in error_response(InvalidInput("x"))[1]
    assert error_response(InvalidFilter("x"))[1]["field"] == "filter"


# -- under Starlette: the scope reaches sync (threadpool) and async endpoints alike --------------


async def test_under_starlette_sync_and_async_endpoints_see_the_scope() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from muxi_isolation import get_scope

    def in_thread(request: Request) -> JSONResponse:
        return JSONResponse({"scope": str(get_scope()), "state": str(request.state.muxi_scope)})

    async def in_loop(request: Request) -> JSONResponse:
        return JSONResponse({"scope": str(get_scope()), "state": str(request.state.muxi_scope)})

    app = Starlette(
        routes=[Route("/sync", in_thread), Route("/async", in_loop)],
        middleware=[Middleware(MuxiIsolationMiddleware, keys=ring())],
    )
    headers = {"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:user_1"}
    async with client(app) as http:
        for path in ("/sync", "/async"):
            response = await http.get(path, headers=headers)
            assert response.json() == {"scope": "tenant_a:user_1", "state": "tenant_a:user_1"}
        refused = await http.get("/sync", headers={**headers, "X-Muxi-User-Id": "tenant_b:u"})
        assert refused.status_code == 403
