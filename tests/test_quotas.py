"""Quotas: per-(tenant, user) limits on sessions, memories and message sizes, checked in
storage on every backend and both halves (a refused write writes nothing), per-tenant
overrides, and the HTTP edge's rate limit (429 with Retry-After)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from muxi_isolation import (
    Backend,
    ConfigError,
    Isolation,
    KeyRing,
    Memory,
    Message,
    QuotaExceeded,
    Scope,
    load_config,
)
from muxi_isolation.client import raise_for_error
from muxi_isolation.quotas import Limits, RateLimiter, message_bytes
from muxi_isolation.server import create_app, openapi_document

HALVES = ["sync", "async"]
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
A1 = Scope("tenant_a", "u1")
A2 = Scope("tenant_a", "u2")
B1 = Scope("tenant_b", "u1")


async def call(backend: Backend, half: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """One storage method, by its sync or its async twin."""
    if half == "sync":
        return getattr(backend, name)(*args, **kwargs)
    return await getattr(backend, "a" + name)(*args, **kwargs)


def session(user: Scope, sid: str) -> Any:
    from muxi_isolation import SessionRecord

    return SessionRecord(sid, user, NOW, NOW, NOW + timedelta(hours=1))


# -- the limits model ------------------------------------------------------------------------


def test_config_limits_with_tenant_overrides() -> None:
    config = load_config(
        {
            "limits": {
                "requests_per_minute": 600,
                "max_memories_per_user": 100000,
                "tenants": {"tenant_a": {"max_memories_per_user": 1000}},
            }
        }
    )
    limits = Limits.from_config(config.limits)
    assert limits.for_tenant("tenant_a").max_memories_per_user == 1000
    assert limits.for_tenant("tenant_a").requests_per_minute == 600  # not overridden: kept
    assert limits.for_tenant("tenant_b").max_memories_per_user == 100000
    assert limits.for_tenant("tenant_b").max_sessions_per_user is None  # unset: none
    assert Limits.from_config(load_config({}).limits) == Limits()


@pytest.mark.parametrize(
    "limits",
    [
        {"max_sessions_per_users": 3},
        {"max_sessions_per_user": -1},
        {"max_sessions_per_user": "3"},
        {"tenants": {"t": {"tenants": {}}}},
    ],
)
def test_a_bad_limits_section_is_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_config({"limits": limits})


def test_message_bytes_are_utf8_of_the_content_json() -> None:
    assert message_bytes(Message("user", "ab")) == 4  # "ab" with its quotes
    assert message_bytes(Message("user", "é")) == 4  # two bytes in UTF-8
    assert message_bytes(Message("user", [{"type": "text", "text": "x"}])) == len(
        '[{"type":"text","text":"x"}]'
    )


# -- storage: every backend, both halves ---------------------------------------------------


@pytest.mark.parametrize("half", HALVES)
async def test_sessions_per_user(backend: Backend, half: str) -> None:
    backend.limits = Limits(
        max_sessions_per_user=2, tenants={"tenant_b": Limits(max_sessions_per_user=3)}
    )
    for sid in ("s1", "s2"):
        await call(backend, half, "insert_session", A1, session(A1, sid))
    with pytest.raises(QuotaExceeded) as info:
        await call(backend, half, "insert_session", A1, session(A1, "s3"))
    assert (info.value.limit, info.value.allowed) == ("max_sessions_per_user", 2)
    assert [s.id for s in await call(backend, half, "list_sessions", A1)] == ["s1", "s2"]
    # a turn that would create a session is refused whole: no session, no message
    with pytest.raises(QuotaExceeded):
        await call(
            backend,
            half,
            "append_to_session",
            A1.with_session("s4"),
            [Message("user", "hi")],
            now=NOW,
            expires_at=NOW + timedelta(hours=1),
            create=session(A1, "s4"),
        )
    assert await call(backend, half, "count_messages", A1.with_session("s4")) == 0
    assert len(await call(backend, half, "list_sessions", A1)) == 2
    # another user, and another tenant with its own override, are unaffected
    for sid in ("s1", "s2"):
        await call(backend, half, "insert_session", A2, session(A2, sid))
    for sid in ("s1", "s2", "s3"):
        await call(backend, half, "insert_session", B1, session(B1, sid))
    with pytest.raises(QuotaExceeded):
        await call(backend, half, "insert_session", B1, session(B1, "s4"))
    # deleting one frees a place
    assert await call(backend, half, "delete_session", A1, "s1")
    await call(backend, half, "insert_session", A1, session(A1, "s3"))


@pytest.mark.parametrize("half", HALVES)
async def test_memories_per_user(backend: Backend, half: str) -> None:
    backend.limits = Limits(tenants={"tenant_a": Limits(max_memories_per_user=3)})
    await call(backend, half, "upsert_memories", A1, [Memory(f"m{i}", "x") for i in range(3)])
    # replacing what the user has adds nothing, so it passes at the limit
    await call(backend, half, "upsert_memories", A1, [Memory("m0", "y"), Memory("m0", "z")])
    with pytest.raises(QuotaExceeded) as info:  # one new among known ones: all refused
        await call(backend, half, "upsert_memories", A1, [Memory("m1", "new"), Memory("m9", "x")])
    assert info.value.limit == "max_memories_per_user"
    found = await call(backend, half, "list_memories", A1)
    assert sorted((m.id, m.content) for m in found) == [("m0", "z"), ("m1", "x"), ("m2", "x")]
    await call(backend, half, "upsert_memories", A2, [Memory(f"m{i}", "x") for i in range(3)])
    # tenant_b has no limit at all
    await call(backend, half, "upsert_memories", B1, [Memory(f"m{i}", "x") for i in range(9)])
    assert await call(backend, half, "count_memories", B1) == 9


@pytest.mark.parametrize("half", HALVES)
async def test_message_bytes(backend: Backend, half: str) -> None:
    backend.limits = Limits(max_message_bytes=4)
    user = A1.with_session("s")
    await call(backend, half, "insert_session", A1, session(A1, "s"))
    await call(backend, half, "append_messages", user, [Message("user", "é")])  # 4 bytes
    writes: list[tuple[str, dict[str, Any]]] = [
        ("append_messages", {}),
        ("replace_messages", {}),
        ("append_to_session", {"now": NOW, "expires_at": NOW + timedelta(hours=1)}),
    ]
    for name, extra in writes:
        with pytest.raises(QuotaExceeded) as info:
            await call(
                backend, half, name, user, [Message("user", "a"), Message("user", "éé")], **extra
            )
        assert info.value.limit == "max_message_bytes"
    with pytest.raises(QuotaExceeded):
        await call(backend, half, "restore_messages", user, [Message("user", "abc", seq=1)])
    assert [m.content for m in await call(backend, half, "get_messages", user)] == ["é"]


def test_the_config_reaches_the_backend(tmp_path: Any) -> None:
    source = {
        "memory": {"persistent": {"connection_string": f"sqlite:///{tmp_path / 'q.db'}"}},
        "limits": {"max_sessions_per_user": 1},
    }
    with Isolation.from_config(source) as iso:
        iso.create_session("tenant_a:u1")
        with pytest.raises(QuotaExceeded):
            iso.create_session("tenant_a:u1")
        iso.create_session("tenant_a:u2")


# -- the HTTP edge ---------------------------------------------------------------------------


def client_for(iso: Isolation) -> httpx.AsyncClient:
    app = create_app(iso, KeyRing(), allow_anonymous=True, request_timeout=None)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_rate_limit_is_per_user_with_retry_after() -> None:
    iso = Isolation.from_config({"memory": {"persistent": {"provider": "memory"}}})
    iso.backend.limits = Limits(requests_per_minute=2)
    async with client_for(iso) as http:
        one, two = {"X-Muxi-User-Id": "u1"}, {"X-Muxi-User-Id": "u2"}
        for _ in range(2):
            assert (await http.get("/v1/sessions", headers=one)).status_code == 200
        refused = await http.get("/v1/sessions", headers=one)
        assert refused.status_code == 429
        assert refused.json()["error"] == "quota_exceeded"
        assert refused.json()["limit"] == "requests_per_minute"
        assert int(refused.headers["retry-after"]) >= 1
        with pytest.raises(QuotaExceeded) as info:
            raise_for_error(refused)
        assert info.value.retry_after == int(refused.headers["retry-after"])
        assert (await http.get("/v1/sessions", headers=two)).status_code == 200
        assert (await http.get("/health")).status_code == 200  # public paths are not counted


async def test_a_storage_quota_is_429_without_retry_after() -> None:
    iso = Isolation.from_config(
        {"memory": {"persistent": {"provider": "memory"}}, "limits": {"max_sessions_per_user": 1}}
    )
    async with client_for(iso) as http:
        assert (await http.post("/v1/chat", json={"message": "hi"})).status_code == 200
        refused = await http.post("/v1/chat", json={"message": "hi"})
        assert refused.status_code == 429
        assert refused.json()["limit"] == "max_sessions_per_user"
        assert "retry-after" not in refused.headers
        assert len((await http.get("/v1/sessions")).json()["sessions"]) == 1


def test_the_rate_limit_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(Limits(requests_per_minute=60), clock=lambda: now[0])
    for _ in range(60):
        limiter.take("t", "u")
    with pytest.raises(QuotaExceeded) as info:
        limiter.take("t", "u")
    assert info.value.retry_after == 1
    now[0] = 1.0
    limiter.take("t", "u")


def test_openapi_lists_429_on_the_user_routes() -> None:
    paths = openapi_document()["paths"]
    for path, method in [
        ("/v1/sessions", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/v1/chat", "post"),
    ]:
        assert "429" in paths[path][method]["responses"], (path, method)
