"""HTTP-edge behaviour that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/http.py`` that ``tests/test_http.py`` let through. The
middleware is driven with raw ASGI messages, so the wire bytes are what is checked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from muxi_isolation import (
    DuplicateRequest,
    Forbidden,
    IsolationError,
    KeyReused,
    KeyRing,
    QuotaExceeded,
    SessionNotFound,
)
from muxi_isolation.http import (
    KEY_HEADER,
    SCOPE_KEY,
    USER_HEADER,
    MuxiIsolationMiddleware,
    error_response,
)

KEY = "fmc_tenant_a_key"


def ring() -> KeyRing:
    keys = KeyRing()
    keys.add_client_key("tenant_a", KEY)
    return keys


async def reads_body(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the request body it read, and the state it was handed."""
    body = (await receive())["body"]
    state = {k: str(v) for k, v in (scope.get("state") or {}).items()}
    payload = json.dumps({"body": body.decode(), "state": state}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


async def request(
    app: Any,
    headers: list[tuple[bytes, bytes]],
    *,
    path: str = "/chat",
    body: bytes = b"",
    state: dict[str, Any] | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "headers": headers}
    if state is not None:
        scope["state"] = state
    await app(scope, receive, send)
    start, content = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], start["headers"], content


def with_key(user: bytes = b"tenant_a:alice") -> list[tuple[bytes, bytes]]:
    return [(KEY_HEADER.lower().encode(), KEY.encode()), (USER_HEADER.lower().encode(), user)]


@pytest.mark.parametrize("path", ["/chat", "/health"])
async def test_downstream_app_can_read_the_request_body(path: str) -> None:
    app = MuxiIsolationMiddleware(reads_body, ring(), public_paths=["/health"])
    status, _, content = await request(app, with_key(), path=path, body=b"hello")
    assert status == 200
    assert json.loads(content)["body"] == "hello"


async def test_existing_asgi_state_is_kept() -> None:
    app = MuxiIsolationMiddleware(reads_body, ring())
    _, _, content = await request(app, with_key(), state={"request_id": "r1"})
    state = json.loads(content)["state"]
    assert state["request_id"] == "r1"
    assert state["muxi_scope"] == "tenant_a:alice"


async def test_error_body_is_compact_utf8_json_with_exact_headers() -> None:
    app = MuxiIsolationMiddleware(reads_body, ring())
    status, headers, content = await request(app, with_key("tenant_a:al ice\u00e9 ".encode()))
    assert status == 400
    # ASGI header names are lowercase; the length is the body's
    assert headers == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    body = json.loads(content)
    assert content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("headers", "code", "rule"),
    [
        ([(KEY_HEADER.lower().encode(), KEY.encode())], "missing_user_id", "is required"),
        ([*with_key(), (b"x-muxi-user-id", b"tenant_a:bob")], "invalid_user_id", "send"),
        (with_key(b"tenant_a:\xff"), "invalid_user_id", "must be UTF-8"),
    ],
)
async def test_user_header_errors_name_the_user_id_field(
    headers: list[tuple[bytes, bytes]], code: str, rule: str
) -> None:
    app = MuxiIsolationMiddleware(reads_body, ring(), require_user_header=True)
    status, _, content = await request(app, headers)
    body = json.loads(content)
    assert (status, body["error"], body["field"]) == (400, code, "user_id")
    assert rule in body["rule"]


async def test_duplicate_headers_are_named_in_the_error() -> None:
    app = MuxiIsolationMiddleware(reads_body, ring())
    twice_key = [*with_key(), (KEY_HEADER.lower().encode(), KEY.encode())]
    status, _, content = await request(app, twice_key)
    assert status == 401
    assert "x-muxi-client-key" in json.loads(content)["message"]
    twice_user = [*with_key(), (USER_HEADER.lower().encode(), b"tenant_a:bob")]
    _, _, content = await request(app, twice_user)
    assert "x-muxi-user-id" in json.loads(content)["rule"]


async def test_downstream_failure_is_logged_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = SessionNotFound("s1")

    async def fails(scope: Any, receive: Any, send: Any) -> None:
        assert scope[SCOPE_KEY].user_id == "alice"
        raise error

    app = MuxiIsolationMiddleware(fails, ring())
    with caplog.at_level(logging.INFO, logger="muxi_isolation.http"):
        status, _, _ = await request(app, with_key())
    assert status == 404
    assert [r.getMessage() for r in caplog.records] == [f"request failed: {error!r}"]


@pytest.mark.parametrize("error", [KeyReused("k-\u00e9"), DuplicateRequest("k-\u00e9")])
def test_an_idempotency_error_names_its_key(error: IsolationError) -> None:
    assert error_response(error)[1]["key"] == "k-\u00e9"


async def test_error_bodies_carry_non_ascii_as_utf8() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        raise SessionNotFound("s\u00e9")

    _, headers, content = await request(MuxiIsolationMiddleware(fails, ring()), with_key())
    assert "s\u00e9".encode() in content  # not the \u escape
    assert (b"content-length", str(len(content)).encode()) in headers


ADMIN = "fma_admin_key"


async def test_without_a_path_an_admin_key_is_under_no_admin_prefix() -> None:
    # an ASGI scope or a resolve() call without a path: "" is under none of the prefixes,
    # so the admin key must impersonate (and may not), whatever the prefixes look like
    keys = ring()
    keys.add_admin_key(ADMIN)
    app = MuxiIsolationMiddleware(reads_body, keys, admin_paths=["N", "X"])
    admin = [(KEY_HEADER.lower().encode(), ADMIN.encode())]
    with pytest.raises(Forbidden):
        app.resolve(admin)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "headers": admin}, receive, send)
    assert sent[0]["status"] == 403


@pytest.mark.parametrize("retry_after", [None, 30])
def test_a_quota_error_names_its_limit(retry_after: int | None) -> None:
    error = QuotaExceeded("requests_per_minute", 60, retry_after=retry_after)
    body = error_response(error)[1]
    assert (body["limit"], body["allowed"]) == ("requests_per_minute", 60)
    assert body.get("retry_after", "absent") == (retry_after or "absent")
