"""The HTTP client: the seed's SDK usage, against the real server, on every backend kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timezone

import httpx
import pytest

from muxi_isolation import (
    AccessDenied,
    Backend,
    Forbidden,
    InvalidIdentifier,
    Isolation,
    IsolationError,
    KeyRing,
    ReservedKey,
    SessionNotFound,
)
from muxi_isolation.agent import UNKNOWN_PREFERENCE
from muxi_isolation.client import AsyncFormation, ChatResponse, Formation, raise_for_error
from muxi_isolation.server import create_app, serve_in_thread

KEY = "fmc_default"
KEY_A = "fmc_tenant_a"
ADMIN = "fma_admin"


def keyring() -> KeyRing:
    keys = KeyRing()
    keys.add_client_key("default", KEY)
    keys.add_client_key("tenant_a", KEY_A)
    keys.add_admin_key(ADMIN)
    return keys


@pytest.fixture
def isolation(backend: Backend) -> Isolation:
    return Isolation(backend)


@pytest.fixture
async def transport(isolation: Isolation) -> AsyncIterator[httpx.ASGITransport]:
    yield httpx.ASGITransport(app=create_app(isolation, keyring()))


@pytest.fixture
async def formation(transport: httpx.ASGITransport) -> AsyncIterator[AsyncFormation]:
    async with AsyncFormation("http://localhost:8001", client_key=KEY, transport=transport) as f:
        yield f


@pytest.fixture
def served(isolation: Isolation) -> Iterator[str]:
    with serve_in_thread(create_app(isolation, keyring())) as base:
        yield base


def test_the_seeds_sdk_usage_over_uvicorn(served: str) -> None:
    formation = Formation(served, client_key=KEY)
    # Create session for user
    session = formation.create_session(user_id="user_123")
    # Chat with user context
    response = formation.chat("Hello", session_id=session.id, user_id="user_123")
    assert isinstance(response, ChatResponse)
    assert response.session_id == session.id
    assert response.user_id == session.user_id == "user_123"
    assert str(response) == response.response
    assert session.created_at is not None
    assert session.created_at.tzinfo == timezone.utc
    history = formation.history(session.id, user_id="user_123")
    assert history.messages[0].content == "Hello"
    assert history.session.id == session.id
    formation.close()


def test_the_sync_client_raises_typed_errors(served: str) -> None:
    with Formation(served, client_key=KEY) as formation:
        session = formation.create_session(user_id="alice")
        with pytest.raises(SessionNotFound) as caught:
            formation.history(session.id, user_id="bob")
        assert caught.value.session_id == session.id
        with pytest.raises(Forbidden):
            formation.chat("hi", user_id="tenant_a:alice")
    with Formation(served, client_key="fmc_wrong") as stranger, pytest.raises(AccessDenied):
        stranger.list_sessions()


def test_non_ascii_user_ids_round_trip_over_a_socket(served: str) -> None:
    with Formation(served, client_key=KEY, user_id="Zoë") as formation:
        session = formation.create_session()
        assert session.user_id == "Zoë"
        assert [s.id for s in formation.list_sessions()] == [session.id]


def test_a_shared_http_client_stays_open_for_its_owner(served: str) -> None:
    with httpx.Client() as shared:
        with Formation(served, client_key=KEY, http=shared) as formation:
            made = formation.create_session(user_id="alice")
        assert not shared.is_closed
        with Formation(served, client_key=KEY, http=shared) as again:
            assert [s.id for s in again.list_sessions(user_id="alice")] == [made.id]


async def test_a_shared_async_http_client_stays_open(transport: httpx.ASGITransport) -> None:
    async with httpx.AsyncClient(transport=transport) as shared:
        async with AsyncFormation(client_key=KEY, http=shared) as formation:
            made = await formation.create_session(user_id="alice")
        assert not shared.is_closed
        async with AsyncFormation(client_key=KEY, http=shared) as again:
            assert [s.id for s in await again.list_sessions(user_id="alice")] == [made.id]


async def test_without_a_key_a_keyed_server_refuses(transport: httpx.ASGITransport) -> None:
    async with AsyncFormation(transport=transport) as keyless:
        with pytest.raises(AccessDenied):
            await keyless.create_session(user_id="alice")
    app = create_app(Isolation(), KeyRing(), allow_anonymous=True)
    anonymous = httpx.ASGITransport(app=app)
    async with AsyncFormation(user_id="alice", transport=anonymous) as keyless:
        assert (await keyless.create_session()).user_id == "alice"


async def test_the_async_twin(formation: AsyncFormation) -> None:
    told = await formation.chat("Remember I like Python", user_id="user_a")
    other = await formation.chat("What language do I like?", user_id="user_b")
    assert other.response == UNKNOWN_PREFERENCE
    own = await formation.chat("What language do I like?", user_id="user_a")
    assert own.response == "You like Python."
    sessions = await formation.list_sessions(user_id="user_a")
    assert sorted(s.id for s in sessions) == sorted([told.session_id, own.session_id])
    history = await formation.history(told.session_id, user_id="user_a")
    assert [(m.role, m.seq) for m in history.messages] == [("user", 1), ("assistant", 2)]
    await formation.delete_session(told.session_id, user_id="user_a")
    with pytest.raises(SessionNotFound):
        await formation.history(told.session_id, user_id="user_a")


async def test_a_default_user_and_per_call_override(transport: httpx.ASGITransport) -> None:
    async with AsyncFormation(client_key=KEY, user_id="carol", transport=transport) as f:
        default = await f.create_session()
        other = await f.create_session(user_id="dave")
        assert (default.user_id, other.user_id) == ("carol", "dave")
    async with AsyncFormation(client_key=KEY, transport=transport) as f:
        assert (await f.create_session()).user_id == "0"  # no user: single-user mode


async def test_typed_errors_rebuilt_from_the_servers_codes(formation: AsyncFormation) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        await formation.create_session(user_id="tenant:  spaced ")
    assert caught.value.field == "user_id"
    with pytest.raises(InvalidIdentifier) as bad_session:
        await formation.chat("hi", session_id=" sess", user_id="u")
    assert bad_session.value.field == "session_id"
    with pytest.raises(ReservedKey):
        await formation.chat("hi", user_id="u", metadata={"muxi_user_id": "victim"})
    with pytest.raises(Forbidden):
        await formation.export_user("u")  # a client key is not an admin key


async def test_admin_calls(transport: httpx.ASGITransport, formation: AsyncFormation) -> None:
    await formation.chat("Remember I like Python", user_id="user_a")
    await formation.chat("Remember I like Rust", user_id="user_b")
    async with AsyncFormation(client_key=ADMIN, transport=transport) as admin:
        exported = await admin.export_user("user_a")
        assert [m["content"] for m in exported["memories"]] == ["I like Python"]
        forgotten = await admin.forget_user("user_a")
        assert forgotten["user_id"] == "user_a"
        assert (await admin.export_user("user_a"))["memories"] == []
        assert [m["content"] for m in (await admin.export_user("user_b"))["memories"]] == [
            "I like Rust"
        ]


async def test_user_ids_with_slashes_reach_the_admin_endpoints(
    transport: httpx.ASGITransport, formation: AsyncFormation
) -> None:
    async with AsyncFormation(client_key=KEY_A, transport=transport) as tenant:
        await tenant.chat("Remember I like Go", user_id="tenant_a:team/alice?x#y")
    async with AsyncFormation(client_key=ADMIN, transport=transport) as admin:
        exported = await admin.export_user("tenant_a:team/alice?x#y")
    assert exported["user_id"] == "tenant_a:team/alice?x#y"
    assert [m["content"] for m in exported["memories"]] == ["I like Go"]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (502, b"<html>Bad gateway</html>", IsolationError, "HTTP 502"),
        (400, b'{"error": "invalid_json", "message": "nope"}', IsolationError, "invalid_json"),
        (
            404,
            b'{"error": "session_not_found", "message": "m", "session_id": "s1"}',
            SessionNotFound,
            "s1",
        ),
        (401, b'{"error": "unauthorized", "message": "missing API key"}', AccessDenied, "missing"),
    ],
)
def test_raise_for_error(status: int, body: bytes, error: type[Exception], text: str) -> None:
    response = httpx.Response(status, content=body)
    with pytest.raises(error, match=text):
        raise_for_error(response)


def test_success_raises_nothing() -> None:
    raise_for_error(httpx.Response(204))


def test_every_server_error_code_comes_back_as_its_class() -> None:
    """The client reads the server's own table, so a new error code cannot drift."""
    import httpx

    from muxi_isolation.client import raise_for_error
    from muxi_isolation.errors import AdapterUnavailable, IsolationError
    from muxi_isolation.http import ERROR_STATUS

    for cls, (status, code) in ERROR_STATUS.items():
        body = {"error": code, "message": "m", "session_id": "s", "field": "user_id"}
        with pytest.raises(IsolationError) as info:
            raise_for_error(httpx.Response(status, json=body))
        expected = IsolationError if cls is AdapterUnavailable else cls
        assert type(info.value) is expected, code
