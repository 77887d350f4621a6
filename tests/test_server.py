"""The reference server, driven over HTTP on every backend kind.

Most tests use httpx's ASGI transport (the whole Starlette app, middleware included); one
runs uvicorn on 127.0.0.1. The seed's curl calls are replayed verbatim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from _clock import Clock

from muxi_isolation import (
    AccessDenied,
    Backend,
    Isolation,
    KeyRing,
    Scope,
    StorageUnavailable,
)
from muxi_isolation.agent import UNKNOWN_PREFERENCE
from muxi_isolation.keys import hash_key
from muxi_isolation.server import create_app, iso_time, openapi_document, serve_in_thread
from muxi_isolation.stores import open_backend

SEED_KEY = "fmc_..."  # the seed's own placeholder, registered as a real key
KEY_A = "fmc_tenant_a"
KEY_B = "fmc_tenant_b"
ADMIN = "fma_admin"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TIMEOUT = 3600


def keyring() -> KeyRing:
    keys = KeyRing()
    keys.add_client_key("default", SEED_KEY)
    keys.add_client_key("tenant_a", KEY_A)
    keys.add_client_key("tenant_b", KEY_B)
    keys.add_admin_key(ADMIN)
    return keys


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def isolation(backend: Backend, clock: Clock) -> Isolation:
    return Isolation(backend, session_timeout=TIMEOUT, clock=clock)


def http_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://localhost:8001")


@pytest.fixture
async def http(isolation: Isolation) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(create_app(isolation, keyring())) as client:
        yield client


def as_user(user_id: str | None, key: str = SEED_KEY) -> dict[str, bytes]:
    headers = {"X-Muxi-Client-Key": key.encode()}
    if user_id is not None:
        headers["X-Muxi-User-Id"] = user_id.encode("utf-8")
    return headers


async def chat(
    http: httpx.AsyncClient,
    user: str,
    message: str,
    session_id: str | None = None,
    key: str = SEED_KEY,
) -> httpx.Response:
    body: dict[str, Any] = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    return await http.post("/v1/chat", headers=as_user(user, key), json=body)


# -- the seed, verbatim ---------------------------------------------------------------------

CURL_FORM = "application/x-www-form-urlencoded"  # what `curl -d` sends


async def test_the_seeds_curl_calls_verbatim(isolation: Isolation) -> None:
    app = create_app(isolation, keyring(), allow_anonymous=True)
    async with http_client(app) as http:
        # curl -X POST http://localhost:8001/v1/chat -H "X-Muxi-User-Id: user_123"
        #   -d '{"message": "Hello"}'
        first = await http.post(
            "http://localhost:8001/v1/chat",
            headers={"X-Muxi-User-Id": "user_123", "Content-Type": CURL_FORM},
            content=b'{"message": "Hello"}',
        )
        assert first.status_code == 200
        assert first.json()["user_id"] == "user_123"
        assert first.json()["response"]

        # curl -X POST http://localhost:8001/v1/sessions -H "X-Muxi-Client-Key: fmc_..."
        created = await http.post(
            "http://localhost:8001/v1/sessions", headers={"X-Muxi-Client-Key": "fmc_..."}
        )
        assert created.status_code == 201
        session = created.json()
        assert set(session) == {"id", "user_id", "created_at"}
        assert session["id"].startswith("sess_")
        assert session["user_id"] == "0"  # no X-Muxi-User-Id: single-user mode
        assert session["created_at"] == "2025-01-08T10:00:00Z"

        # The seed then uses the id from its example response, sess_abc123; an app may pick
        # session ids, so make that one for the same user and replay the calls as written.
        isolation.sessions.create(Scope.parse(None), "sess_abc123")
        for _ in range(2):
            # curl -X POST http://localhost:8001/v1/chat -H "X-Muxi-Client-Key: fmc_..."
            #   -d '{"message": "Hello", "session_id": "sess_abc123"}'
            used = await http.post(
                "http://localhost:8001/v1/chat",
                headers={"X-Muxi-Client-Key": "fmc_...", "Content-Type": CURL_FORM},
                content=b'{"message": "Hello", "session_id": "sess_abc123"}',
            )
            assert used.status_code == 200
            assert used.json()["session_id"] == "sess_abc123"

        # curl http://localhost:8001/v1/sessions/sess_abc123 -H "X-Muxi-Client-Key: fmc_..."
        history = await http.get(
            "http://localhost:8001/v1/sessions/sess_abc123",
            headers={"X-Muxi-Client-Key": "fmc_..."},
        )
        assert history.status_code == 200
        messages = history.json()["messages"]
        assert [(m["role"], m["content"]) for m in messages][::2] == [("user", "Hello")] * 2
        assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
        assert len(messages) == 4

        # and with the id the create call really returned
        again = await http.post(
            "http://localhost:8001/v1/chat",
            headers={"X-Muxi-Client-Key": "fmc_...", "Content-Type": CURL_FORM},
            content=b'{"message": "Hello", "session_id": "%s"}' % session["id"].encode(),
        )
        assert again.status_code == 200


async def test_without_anonymous_mode_the_keyless_seed_call_is_401(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat", headers={"X-Muxi-User-Id": "user_123"}, content=b'{"message": "Hello"}'
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


# -- the seed's memory scenario -------------------------------------------------------------


async def test_user_b_does_not_hear_user_as_preference(http: httpx.AsyncClient) -> None:
    told = await chat(http, "user_a", "Remember I like Python")
    assert told.status_code == 200
    b = await chat(http, "user_b", "What language do I like?")
    assert b.json()["response"] == UNKNOWN_PREFERENCE == "I don't know your preference yet."
    a = await chat(http, "user_a", "What language do I like?")
    assert a.json()["response"] == "You like Python."
    assert a.json()["session_id"] != told.json()["session_id"]  # memory outlives the session


async def test_same_user_id_in_another_tenant_sees_nothing(http: httpx.AsyncClient) -> None:
    await chat(http, "tenant_a:user_1", "Remember I like Rust", key=KEY_A)
    other = await chat(http, "tenant_b:user_1", "What language do I like?", key=KEY_B)
    assert other.json()["response"] == UNKNOWN_PREFERENCE
    assert other.json()["user_id"] == "tenant_b:user_1"
    own = await chat(http, "tenant_a:user_1", "What language do I like?", key=KEY_A)
    assert own.json()["response"] == "You like Rust."


async def test_concurrent_users_never_hear_each_other(http: httpx.AsyncClient) -> None:
    users = [f"tenant_{t}:user_{u}" for t in "ab" for u in range(6)]

    async def one(user: str) -> str:
        key = KEY_A if user.startswith("tenant_a") else KEY_B
        secret = f"Lang{abs(hash(user)) % 10**8}"
        told = await chat(http, user, f"Remember I like {secret}", key=key)
        assert told.status_code == 200
        asked = await chat(http, user, "What do I like?", told.json()["session_id"], key=key)
        return f"{secret}|{asked.json()['response']}"

    for result in await asyncio.gather(*(one(u) for u in users)):
        secret, answer = result.split("|")
        assert answer == f"You like {secret}."


# -- sessions -------------------------------------------------------------------------------


async def test_session_ids_and_user_ids_come_back_canonical(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/sessions", headers=as_user("tenant_a:user_1", KEY_A))
    assert created.json()["user_id"] == "tenant_a:user_1"
    assert ISO_Z.match(created.json()["created_at"])
    default = await http.post("/v1/sessions", headers=as_user("default:user_1"))
    assert default.json()["user_id"] == "user_1"
    nfc = await http.post(
        "/v1/sessions",
        headers=[("X-Muxi-Client-Key", SEED_KEY), ("X-Muxi-User-Id", "jose\u0301".encode())],
    )
    assert nfc.json()["user_id"] == "jos\u00e9"
    listed = await http.get("/v1/sessions", headers=as_user("jos\u00e9"))
    assert [s["id"] for s in listed.json()["sessions"]] == [nfc.json()["id"]]


async def test_chat_continues_a_session_and_stores_every_turn(http: httpx.AsyncClient) -> None:
    first = await chat(http, "user_a", "Remember my name is Ada")
    sid = first.json()["session_id"]
    second = await chat(http, "user_a", "What is my name?", sid)
    expected = {"session_id": sid, "user_id": "user_a", "response": "Your name is Ada."}
    assert second.json() == expected
    history = (await http.get(f"/v1/sessions/{sid}", headers=as_user("user_a"))).json()
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "Remember my name is Ada"),
        ("assistant", "Got it. I'll remember that your name is Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    assert all(ISO_Z.match(m["created_at"]) for m in history["messages"])
    assert history["user_id"] == "user_a"


async def test_list_shows_only_the_callers_sessions(http: httpx.AsyncClient) -> None:
    a1 = (await http.post("/v1/sessions", headers=as_user("tenant_a:u", KEY_A))).json()["id"]
    a2 = (await http.post("/v1/sessions", headers=as_user("tenant_a:u", KEY_A))).json()["id"]
    await http.post("/v1/sessions", headers=as_user("tenant_a:v", KEY_A))
    await http.post("/v1/sessions", headers=as_user("tenant_b:u", KEY_B))
    listed = await http.get("/v1/sessions", headers=as_user("tenant_a:u", KEY_A))
    assert sorted(s["id"] for s in listed.json()["sessions"]) == sorted([a1, a2])
    assert all(s["user_id"] == "tenant_a:u" for s in listed.json()["sessions"])
    empty = await http.get("/v1/sessions", headers=as_user("tenant_b:v", KEY_B))
    assert empty.json() == {"sessions": []}


async def test_anothers_session_looks_exactly_like_an_unknown_one(http: httpx.AsyncClient) -> None:
    sid = (await chat(http, "tenant_a:alice", "Remember I like Go", key=KEY_A)).json()["session_id"]
    strangers = [("tenant_a:bob", KEY_A), ("tenant_b:alice", KEY_B)]
    for user, key in strangers:
        for response in (
            await http.get(f"/v1/sessions/{sid}", headers=as_user(user, key)),
            await chat(http, user, "What language do I like?", sid, key=key),
            await http.delete(f"/v1/sessions/{sid}", headers=as_user(user, key)),
        ):
            assert response.status_code == 404
            assert response.json()["error"] == "session_not_found"
        unknown = await http.get("/v1/sessions/sess_unknown", headers=as_user(user, key))
        foreign = await http.get(f"/v1/sessions/{sid}", headers=as_user(user, key))
        assert foreign.json().keys() == unknown.json().keys()
        assert foreign.json()["message"].replace(sid, "X") == unknown.json()["message"].replace(
            "sess_unknown", "X"
        )
    still = await http.get(f"/v1/sessions/{sid}", headers=as_user("tenant_a:alice", KEY_A))
    assert len(still.json()["messages"]) == 2


async def test_an_expired_session_is_410_and_memory_persists(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    sid = (await chat(http, "user_a", "Remember I like Python")).json()["session_id"]
    clock.advance(TIMEOUT + 1)
    expired = await chat(http, "user_a", "What language do I like?", sid)
    assert expired.status_code == 410
    assert expired.json() == {
        "error": "session_expired",
        "message": f"session expired: {sid!r}",
        "session_id": sid,
    }
    readable = await http.get(f"/v1/sessions/{sid}", headers=as_user("user_a"))
    assert readable.status_code == 200  # history stays readable until purged
    fresh = await chat(http, "user_a", "What language do I like?")
    assert fresh.json()["response"] == "You like Python."


async def test_each_turn_pushes_the_expiry_forward(http: httpx.AsyncClient, clock: Clock) -> None:
    sid = (await chat(http, "user_a", "hello")).json()["session_id"]
    for _ in range(3):
        clock.advance(TIMEOUT - 1)
        assert (await chat(http, "user_a", "still here", sid)).status_code == 200


async def test_delete_session_keeps_the_users_memory(http: httpx.AsyncClient) -> None:
    sid = (await chat(http, "user_a", "Remember I like Python")).json()["session_id"]
    deleted = await http.delete(f"/v1/sessions/{sid}", headers=as_user("user_a"))
    assert deleted.status_code == 204
    gone = await http.get(f"/v1/sessions/{sid}", headers=as_user("user_a"))
    assert gone.status_code == 404
    asked = await chat(http, "user_a", "What language do I like?")
    assert asked.json()["response"] == "You like Python."


# -- bad requests -----------------------------------------------------------------------------

BAD_BODIES = [
    (b"Hello", 400, "invalid_json"),
    (b'{"message": "Hello"', 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b'["Hello"]', 422, "invalid_request"),
    (b"{}", 422, "invalid_request"),
    (b'{"message": 5}', 422, "invalid_request"),
    (b'{"message": true}', 422, "invalid_request"),
    (b'{"message": "   "}', 422, "invalid_request"),
    (b'{"message": "hi", "session_id": 3}', 422, "invalid_request"),
    (b'{"message": "hi", "metadata": [1]}', 422, "invalid_request"),
    (b'{"message": "hi", "session_id": " sess_x"}', 400, "invalid_identifier"),
    (b'{"message": "hi", "session_id": ""}', 400, "invalid_identifier"),
    (b'{"message": "hi", "user_id": "victim"}', 400, "scope_violation"),
    (b'{"message": "hi", "tenant_id": "tenant_b"}', 400, "scope_violation"),
    (b'{"message": "hi", "metadata": {"muxi_user_id": "victim"}}', 400, "reserved_key"),
    (b'{"message": "hi", "metadata": {"muxi_tenant_id": "t"}}', 400, "reserved_key"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_chat_bodies(
    http: httpx.AsyncClient, isolation: Isolation, body: bytes, status: int, code: str
) -> None:
    response = await http.post("/v1/chat", headers=as_user("user_a"), content=body)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert isolation.list_sessions("user_a") == []  # refused before anything was written


# Bodies that some backend cannot store: every backend refuses them whole, before the session
# is made or the agent runs ("Remember I like ..." would write a memory).
UNSTORABLE_BODIES = [
    (b'{"message": "Remember I like \\ud800"}', "invalid_input", "message"),
    (b'{"message": "Remember I like \\udc00 tea"}', "invalid_input", "message"),
    (b'{"message": "Remember I like \\u0000"}', "invalid_input", "message"),
    (b'{"message": "Remember I like tea", "metadata": {"x": NaN}}', "invalid_input", "metadata"),
    (
        b'{"message": "Remember I like tea", "metadata": {"x": -Infinity}}',
        "invalid_input",
        "metadata",
    ),
    (
        b'{"message": "Remember I like tea", "metadata": {"a\\u0000": 1}}',
        "invalid_input",
        "metadata",
    ),
    (
        b'{"message": "Remember I like tea", "metadata": {"a": ["\\ud83d"]}}',
        "invalid_input",
        "metadata",
    ),
    (
        b'{"message": "Remember I like tea", "metadata": {"\\ud83d": 1}}',
        "invalid_input",
        "metadata",
    ),
    (b'{"message": "Remember I like tea", "extra": NaN}', "invalid_input", "extra"),
    (b'{"message": "Remember I like tea", "\\u0000": 1}', "invalid_input", "a body field's name"),
    (
        b'{"message": "Remember I like tea", "session_id": "s\\u0000"}',
        "invalid_identifier",
        "session_id",
    ),
    (
        b'{"message": "Remember I like tea", "session_id": "\\ud800"}',
        "invalid_identifier",
        "session_id",
    ),
]


async def _stored(isolation: Isolation, user: str) -> tuple[list[str], int, int]:
    """Session ids, message count and memory count of ``user``: what a refusal must not touch."""
    scope = Scope.parse(user)
    records = isolation.list_sessions(user)
    messages = [len(isolation.history(r.id, user)) for r in records]
    memories = await isolation.backend.alist_memories(scope)
    return sorted(r.id for r in records), sum(messages), len(memories)


@pytest.mark.parametrize(("body", "code", "field"), UNSTORABLE_BODIES)
async def test_unstorable_chat_bodies_are_400_and_write_nothing(
    http: httpx.AsyncClient, isolation: Isolation, body: bytes, code: str, field: str
) -> None:
    response = await http.post("/v1/chat", headers=as_user("user_a"), content=body)
    assert (response.status_code, response.json()["error"]) == (400, code)
    assert response.json()["field"] == field
    assert await _stored(isolation, "user_a") == ([], 0, 0)


@pytest.mark.parametrize(("body", "code", "field"), UNSTORABLE_BODIES)
async def test_unstorable_turns_in_an_existing_session_write_nothing(
    http: httpx.AsyncClient, isolation: Isolation, body: bytes, code: str, field: str
) -> None:
    sid = (await chat(http, "user_a", "hello")).json()["session_id"]
    before = await _stored(isolation, "user_a")
    data = json.loads(body)
    data.setdefault("session_id", sid)
    raw = json.dumps(data).encode()  # NaN and lone surrogates survive as NaN and \u escapes
    response = await http.post("/v1/chat", headers=as_user("user_a"), content=raw)
    assert (response.status_code, response.json()["error"]) == (400, code)
    assert await _stored(isolation, "user_a") == before


async def test_a_deeply_nested_body_is_invalid_json(
    http: httpx.AsyncClient, isolation: Isolation
) -> None:
    deep = b'{"message": "hi", "metadata": {"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}"
    response = await http.post("/v1/chat", headers=as_user("user_a"), content=deep[: 1 << 20])
    assert (response.status_code, response.json()["error"]) == (400, "invalid_json")
    assert await _stored(isolation, "user_a") == ([], 0, 0)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"user_id": "victim"}', 400, "scope_violation"),
        (b'{"tenant_id": "tenant_b"}', 400, "scope_violation"),
        (b'{"session_id": "mine"}', 422, "invalid_request"),
        (b'{"x": NaN}', 400, "invalid_input"),
        (b"not json", 400, "invalid_json"),
        (b"[]", 422, "invalid_request"),
    ],
)
async def test_bodies_on_session_creation_are_checked_too(
    http: httpx.AsyncClient, isolation: Isolation, body: bytes, status: int, code: str
) -> None:
    response = await http.post("/v1/sessions", headers=as_user("user_a"), content=body)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert isolation.list_sessions("user_a") == []
    for empty in (b"", b"{}"):
        made = await http.post("/v1/sessions", headers=as_user("user_a"), content=empty)
        assert made.status_code == 201


async def test_metadata_is_stored_on_the_users_message(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat",
        headers=as_user("user_a"),
        json={"message": "hi", "metadata": {"channel": "web"}},
    )
    sid = response.json()["session_id"]
    history = (await http.get(f"/v1/sessions/{sid}", headers=as_user("user_a"))).json()
    assert history["messages"][0]["metadata"] == {"channel": "web"}


async def test_a_body_too_large_is_413(http: httpx.AsyncClient) -> None:
    big = b'{"message": "' + b"x" * (2 << 20) + b'"}'
    response = await http.post("/v1/chat", headers=as_user("user_a"), content=big)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while read
        for _ in range(3):
            yield b"x" * (1 << 19)

    streamed = await http.post("/v1/chat", headers=as_user("user_a"), content=chunks())
    assert (streamed.status_code, streamed.json()["error"]) == (413, "body_too_large")


async def test_invalid_session_id_in_the_path_is_400(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/sessions/%20sess", headers=as_user("user_a"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_identifier"
    assert response.json()["field"] == "session_id"


AUTH_FAILURES = [
    ({}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": "fmc_wrong"}, 401, "unauthorized"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_b:user_1"}, 403, "forbidden"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a: user_1"}, 400, "invalid_user_id"),
    ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "bad:tenant:x"}, 403, "forbidden"),
]


@pytest.mark.parametrize(("headers", "status", "code"), AUTH_FAILURES)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/sess_x"),
        ("POST", "/v1/chat"),
        ("DELETE", "/v1/sessions/sess_x"),
    ],
)
async def test_every_endpoint_checks_the_key_and_user(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    status: int,
    code: str,
    method: str,
    path: str,
) -> None:
    response = await http.request(method, path, headers=headers, json={"message": "hi"})
    assert (response.status_code, response.json()["error"]) == (status, code)


async def test_unknown_routes_and_methods_are_json(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v2/nothing", headers=as_user("user_a"))
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await http.put("/v1/chat", headers=as_user("user_a"))
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


async def test_storage_failure_is_503_without_details(
    http: httpx.AsyncClient, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("connection refused: postgresql://app:hunter2@db/muxi")

    # fault injection at the backend's driver boundary, whatever the backend kind
    monkeypatch.setattr(backend, "_aperform", down)
    response = await http.post("/v1/sessions", headers=as_user("user_a"))
    assert response.status_code == 503
    assert response.json()["error"] == "storage_unavailable"
    assert "hunter2" not in response.text


async def test_an_unreachable_database_is_503() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = open_backend(f"postgresql://app:hunter2@127.0.0.1:{port}/muxi")
    try:
        async with http_client(create_app(Isolation(backend), keyring())) as http:
            response = await http.post("/v1/sessions", headers=as_user("user_a"))
    finally:
        backend.close()
    assert (response.status_code, response.json()["error"]) == (503, "storage_unavailable")
    assert "hunter2" not in response.text


async def test_an_agent_crash_is_a_json_500(isolation: Isolation) -> None:
    class Broken:
        async def respond(self, turn: Any) -> str:
            raise RuntimeError("model exploded")

    transport = httpx.ASGITransport(
        app=create_app(isolation, keyring(), Broken()), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await chat(http, "user_a", "hi")  # type: ignore[arg-type]
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "internal error"}
    assert isolation.list_sessions("user_a") == []  # the turn and its new session: one write


# -- admin ------------------------------------------------------------------------------------


async def test_admin_export_holds_only_that_user(http: httpx.AsyncClient) -> None:
    await chat(http, "tenant_a:user/1", "Remember I like Python", key=KEY_A)
    await chat(http, "tenant_a:user_2", "Remember I like Rust", key=KEY_A)
    await chat(http, "tenant_b:user/1", "Remember I like Go", key=KEY_B)
    path = "/v1/admin/users/tenant_a%3Auser%2F1/export"
    export = await http.get(path, headers={"X-Muxi-Client-Key": ADMIN})
    assert export.status_code == 200
    data = export.json()
    assert (data["user_id"], data["tenant_id"]) == ("tenant_a:user/1", "tenant_a")
    assert [m["content"] for m in data["memories"]] == ["I like Python"]
    assert data["memories"][0]["metadata"]["topic"] == "language"
    assert len(data["sessions"]) == 1
    assert data["sessions"][0]["messages"][0]["content"] == "Remember I like Python"


async def test_admin_forget_deletes_one_user(http: httpx.AsyncClient) -> None:
    await chat(http, "tenant_a:alice", "Remember I like Python", key=KEY_A)
    await chat(http, "tenant_b:alice", "Remember I like Go", key=KEY_B)
    forgot = await http.delete(
        "/v1/admin/users/tenant_a:alice", headers={"X-Muxi-Client-Key": ADMIN}
    )
    assert forgot.status_code == 200
    assert forgot.json()["user_id"] == "tenant_a:alice"
    assert sum(forgot.json()["deleted"].values()) >= 4  # a session, two messages, a memory
    gone = await chat(http, "tenant_a:alice", "What language do I like?", key=KEY_A)
    assert gone.json()["response"] == UNKNOWN_PREFERENCE
    kept = await chat(http, "tenant_b:alice", "What language do I like?", key=KEY_B)
    assert kept.json()["response"] == "You like Go."


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"X-Muxi-Client-Key": "fma_wrong"}, 401, "unauthorized"),
        # client keys acting within their own tenant get past the middleware, not the endpoint
        ({"X-Muxi-Client-Key": KEY_A, "X-Muxi-User-Id": "tenant_a:alice"}, 403, "forbidden"),
        ({"X-Muxi-Client-Key": SEED_KEY}, 403, "forbidden"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/users/tenant_a:alice/export"),
        ("DELETE", "/v1/admin/users/tenant_a:alice"),
    ],
)
async def test_admin_endpoints_need_an_admin_key(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    status: int,
    code: str,
    method: str,
    path: str,
) -> None:
    await chat(http, "tenant_a:alice", "Remember I like Python", key=KEY_A)
    response = await http.request(method, path, headers=headers)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert "admin" in response.json()["message"] or status == 401
    still = await chat(http, "tenant_a:alice", "What language do I like?", key=KEY_A)
    assert still.json()["response"] == "You like Python."


USER_ROUTES = [
    ("POST", "/v1/sessions", None),
    ("GET", "/v1/sessions", None),
    ("GET", "/v1/sessions/{sid}", None),
    ("DELETE", "/v1/sessions/{sid}", None),
    ("POST", "/v1/chat", {"message": "Remember I like Cobol"}),
    ("POST", "/v1/chat", {"message": "Remember I like Cobol", "session_id": "{sid}"}),
]


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES)
@pytest.mark.parametrize("user", ["tenant_a:alice", None])
async def test_an_admin_key_acts_as_no_user(
    http: httpx.AsyncClient,
    isolation: Isolation,
    method: str,
    path: str,
    body: dict[str, str] | None,
    user: str | None,
) -> None:
    sid = (await chat(http, "tenant_a:alice", "Remember I like Python", key=KEY_A)).json()[
        "session_id"
    ]
    before = await _stored(isolation, "tenant_a:alice")
    headers = {"X-Muxi-Client-Key": ADMIN} | ({"X-Muxi-User-Id": user} if user else {})
    body = {k: v.format(sid=sid) for k, v in body.items()} if body else None
    response = await http.request(method, path.format(sid=sid), headers=headers, json=body)
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert await _stored(isolation, "tenant_a:alice") == before
    assert await _stored(isolation, "0") == ([], 0, 0)


async def test_an_impersonating_admin_key_acts_as_the_user_and_is_logged(
    isolation: Isolation, caplog: pytest.LogCaptureFixture
) -> None:
    keys = keyring()
    keys.add_admin_key("fma_support", impersonate=True)
    support = {"X-Muxi-Client-Key": "fma_support", "X-Muxi-User-Id": "tenant_a:alice"}
    with caplog.at_level(logging.WARNING, logger="muxi_isolation.http"):
        async with http_client(create_app(isolation, keys)) as http:
            told = await http.post(
                "/v1/chat", headers=support, json={"message": "Remember I like Go"}
            )
            listed = await http.get("/v1/sessions", headers=support)
            exported = await http.get("/v1/admin/users/tenant_a:alice/export", headers=support)
    assert told.status_code == listed.status_code == exported.status_code == 200
    assert told.json()["user_id"] == "tenant_a:alice"
    assert [s["id"] for s in listed.json()["sessions"]] == [told.json()["session_id"]]
    key_id = "sha256:" + hash_key("fma_support")[:12]
    assert [r.getMessage() for r in caplog.records if r.name == "muxi_isolation.http"] == [
        f"admin key {key_id} acts as user 'tenant_a:alice': POST /v1/chat",
        f"admin key {key_id} acts as user 'tenant_a:alice': GET /v1/sessions",
    ]  # the admin endpoint is the key's own business: not an impersonation


async def test_admin_user_id_in_the_path_is_validated(http: httpx.AsyncClient) -> None:
    admin = {"X-Muxi-Client-Key": ADMIN}
    response = await http.delete("/v1/admin/users/tenant_a:%20x", headers=admin)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_identifier")


async def test_anonymous_callers_are_401_on_admin_endpoints(isolation: Isolation) -> None:
    async with http_client(create_app(isolation, keyring(), allow_anonymous=True)) as http:
        response = await http.get("/v1/admin/users/user_a/export")
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")


async def test_export_and_forget_are_swappable(isolation: Isolation) -> None:
    calls: list[tuple[str, Scope]] = []

    async def export(iso: Isolation, user: Scope) -> dict[str, Any]:
        calls.append(("export", user))
        return {"custom": True}

    async def forget(iso: Isolation, user: Scope) -> dict[str, Any]:
        calls.append(("forget", user))
        return {"custom": True}

    app = create_app(isolation, keyring(), export=export, forget=forget)
    async with http_client(app) as http:
        admin = {"X-Muxi-Client-Key": ADMIN}
        exported = await http.get("/v1/admin/users/t:u/export", headers=admin)
        forgotten = await http.delete("/v1/admin/users/t:u", headers=admin)
    assert exported.json() == forgotten.json() == {"custom": True}
    assert calls == [("export", Scope("t", "u")), ("forget", Scope("t", "u"))]


# -- OpenAPI, health ----------------------------------------------------------------------------


async def test_openapi_documents_every_route_and_is_public(
    http: httpx.AsyncClient, isolation: Isolation
) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    documented = {(path, method.upper()) for path, ops in paths.items() for method in ops}
    app = create_app(isolation, keyring())
    served = {
        (re.sub(r"\{(\w+):path\}", r"{\1}", route.path), method)  # type: ignore[attr-defined]
        for route in app.routes
        for method in route.methods - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert documented == served
    refs = re.findall(r'"#/components/(\w+)/(\w+)"', response.text)
    for section, name in refs:
        assert name in document["components"][section], name


async def test_health_is_public(http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).json() == {"status": "ok"}


async def test_the_routes_without_the_middleware_fail_closed(isolation: Isolation) -> None:
    routes_alone = create_app(isolation, keyring()).router  # no middleware resolved a scope
    async with http_client(routes_alone) as client:
        for method, path, body in [
            ("POST", "/v1/chat", {"message": "Remember I like tea"}),
            ("POST", "/v1/sessions", None),
            ("GET", "/v1/sessions", None),
            ("GET", "/v1/sessions/s1", None),
            ("DELETE", "/v1/sessions/s1", None),
        ]:
            with pytest.raises(AccessDenied, match="no scope was resolved"):
                await client.request(method, path, headers=as_user("alice", KEY_A), json=body)
    assert isolation.backend.list_tenants() == []


def test_times_are_shown_in_utc_to_the_second() -> None:
    assert iso_time(datetime(2025, 1, 8, 10, 0, 0, 999_999)) == "2025-01-08T10:00:00Z"  # naive
    plus_two = timezone(timedelta(hours=2))
    assert iso_time(datetime(2025, 1, 8, 12, 30, tzinfo=plus_two)) == "2025-01-08T10:30:00Z"


# -- over a real socket -------------------------------------------------------------------------


def test_uvicorn_on_loopback(isolation: Isolation) -> None:
    app = create_app(isolation, keyring(), allow_anonymous=True)
    with serve_in_thread(app) as base, httpx.Client(base_url=base) as http:
        assert base.startswith("http://127.0.0.1:")
        first = http.post(
            "/v1/chat",
            headers={"X-Muxi-User-Id": "user_123"},
            content=b'{"message": "Remember I like Python"}',
        )
        assert first.status_code == 200
        other = http.post(
            "/v1/chat",
            headers={"X-Muxi-User-Id": "user_456"},
            content=b'{"message": "What language do I like?"}',
        )
        assert other.json()["response"] == UNKNOWN_PREFERENCE
        created = http.post("/v1/sessions", headers={"X-Muxi-Client-Key": "fmc_..."})
        assert created.status_code == 201
        unicode_user = http.post(
            "/v1/sessions",
            headers=[(b"X-Muxi-Client-Key", b"fmc_..."), (b"X-Muxi-User-Id", "zoë".encode())],
        )
        assert unicode_user.json()["user_id"] == "zoë"
        refused = http.post(
            "/v1/chat", headers={"X-Muxi-Client-Key": "fmc_wrong"}, content=b'{"message": "x"}'
        )
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")


# -- idempotent requests and deadlines (issue 19) ---------------------------------------------


async def test_a_chat_retried_with_its_key_is_answered_once(
    http: httpx.AsyncClient, isolation: Isolation
) -> None:
    headers = {**as_user("tenant_a:alice", KEY_A), "Idempotency-Key": "k-1"}
    first = await http.post("/v1/chat", headers=headers, json={"message": "Remember I like Go"})
    again = await http.post("/v1/chat", headers=headers, json={"message": "Remember I like Go"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    [record] = isolation.list_sessions("tenant_a:alice")
    assert [m.content for m in isolation.history(record.id, "tenant_a:alice")][:1] == [
        "Remember I like Go"
    ]
    assert len(isolation.history(record.id, "tenant_a:alice")) == 2  # one turn, not two
    other = await http.post("/v1/chat", headers=headers, json={"message": "something else"})
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    bob = {**as_user("tenant_a:bob", KEY_A), "Idempotency-Key": "k-1"}  # keys are per user
    assert (await http.post("/v1/chat", headers=bob, json={"message": "hi"})).status_code == 200
    assert len(isolation.list_sessions("tenant_a:bob")) == 1


async def test_a_session_created_twice_with_one_key_is_one_session(
    http: httpx.AsyncClient, isolation: Isolation
) -> None:
    headers = {**as_user("tenant_a:alice", KEY_A), "Idempotency-Key": "make-1"}
    first = await http.post("/v1/sessions", headers=headers)
    again = await http.post("/v1/sessions", headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert [r.id for r in isolation.list_sessions("tenant_a:alice")] == [first.json()["id"]]


async def test_a_malformed_idempotency_key_is_400_and_writes_nothing(
    http: httpx.AsyncClient, isolation: Isolation
) -> None:
    headers = {**as_user("tenant_a:alice", KEY_A), "Idempotency-Key": " padded "}
    answer = await http.post("/v1/chat", headers=headers, json={"message": "hi"})
    assert answer.status_code == 400 and answer.json()["field"] == "idempotency_key"
    assert isolation.list_sessions("tenant_a:alice") == []


async def test_a_request_past_its_deadline_is_503_and_its_turn_is_never_stored(
    isolation: Isolation,
) -> None:
    class Slow:
        async def respond(self, turn: Any) -> str:
            await asyncio.sleep(1.0)
            return "too late"

    app = create_app(isolation, keyring(), Slow(), request_timeout=0.2)
    async with http_client(app) as http:
        answer = await chat(http, "tenant_a:alice", "hi", key=KEY_A)
        assert answer.status_code == 503 and answer.json()["error"] == "deadline_exceeded"
        assert answer.headers["retry-after"] == "1"
        await asyncio.sleep(1.5)  # past the time the agent would have answered
    assert isolation.list_sessions("tenant_a:alice") == []


async def test_every_503_says_when_to_retry(isolation: Isolation) -> None:
    class Unavailable:
        async def respond(self, turn: Any) -> str:
            raise StorageUnavailable("the database went away")

    async with http_client(create_app(isolation, keyring(), Unavailable())) as http:
        answer = await chat(http, "tenant_a:alice", "hi", key=KEY_A)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "storage_unavailable"
