"""What ``POST /v1/chat`` asks of storage, on every backend: a turn in an open session reads
the session and its history in one transaction (``read_turn``) and writes in one more; a
new session is one; a missing, foreign or expired session is refused after that one read,
with the status and error code it always had, before the agent runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from _clock import Clock
from sqlalchemy import event

from muxi_isolation import Backend, Isolation, KeyRing, Scope
from muxi_isolation.agent import Turn
from muxi_isolation.server import create_app
from muxi_isolation.stores.operations import Operation
from muxi_isolation.stores.sql import SQLBackend

KEY_A, KEY_B = "fmc_turn_a", "fmc_turn_b"
TIMEOUT = 3600
ALICE = Scope("tenant_a", "alice")


class Quiet:
    """An agent that touches no storage, so what is counted is the turn's own."""

    def __init__(self) -> None:
        self.turns = 0

    async def respond(self, turn: Turn) -> str:
        self.turns += 1
        return f"seen {len(turn.history)}"


class Counted:
    """The primitives that reach ``backend`` and, on SQL, the transactions it begins."""

    def __init__(self, backend: Backend) -> None:
        self.ops: list[str] = []
        self.begins = 0
        real = backend._aperform

        async def aperform(op: Operation[Any]) -> Any:
            self.ops.append(op.name)
            return await real(op)

        backend._aperform = aperform  # type: ignore[method-assign]
        if isinstance(backend, SQLBackend):
            backend.setup()  # its tables made before counting starts
            for sync_engine, async_engine in backend._all_engines():
                for engine in (sync_engine, async_engine.sync_engine):
                    event.listen(engine, "begin", self._begin)

    def _begin(self, conn: Any) -> None:
        self.begins += 1

    def take(self) -> tuple[list[str], int]:
        found = self.ops[:], self.begins
        self.ops.clear()
        self.begins = 0
        return found


def as_user(user: str, key: str) -> dict[str, str]:
    return {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": user}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agent() -> Quiet:
    return Quiet()


@pytest.fixture
async def http(backend: Backend, clock: Clock, agent: Quiet) -> AsyncIterator[httpx.AsyncClient]:
    keys = KeyRing()
    keys.add_client_key("tenant_a", KEY_A)
    keys.add_client_key("tenant_b", KEY_B)
    app = create_app(Isolation(backend, session_timeout=TIMEOUT, clock=clock), keys, agent)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def chat(
    http: httpx.AsyncClient, user: str, key: str, session_id: str | None = None
) -> httpx.Response:
    body = {"message": "hello"} | ({"session_id": session_id} if session_id else {})
    return await http.post("/v1/chat", headers=as_user(user, key), json=body)


async def test_a_turn_in_an_open_session_reads_in_one_transaction(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    counted = Counted(backend)
    first = await chat(http, "tenant_a:alice", KEY_A)
    assert first.status_code == 200 and first.json()["response"] == "seen 0"
    ops, begins = counted.take()
    assert ops == ["append_to_session"]  # a new session: stored with the turn
    assert begins == (1 if isinstance(backend, SQLBackend) else 0)
    sid = first.json()["session_id"]
    again = await chat(http, "tenant_a:alice", KEY_A, sid)
    assert again.status_code == 200 and again.json()["response"] == "seen 2"
    ops, begins = counted.take()
    assert ops == ["read_turn", "append_to_session"]  # was get_session, get_messages, append
    assert begins == (2 if isinstance(backend, SQLBackend) else 0)


async def test_refused_turns_keep_their_status_and_read_once(
    backend: Backend, http: httpx.AsyncClient, clock: Clock, agent: Quiet
) -> None:
    sid = (await chat(http, "tenant_a:alice", KEY_A)).json()["session_id"]
    counted = Counted(backend)
    ran = agent.turns
    refused = [
        ("tenant_a:bob", KEY_A, sid, 404, "session_not_found"),  # another user's
        ("tenant_b:alice", KEY_B, sid, 404, "session_not_found"),  # same user id, other tenant
        ("tenant_a:alice", KEY_A, "sess_unknown", 404, "session_not_found"),
    ]
    for user, key, session_id, status, code in refused:
        response = await chat(http, user, key, session_id)
        assert (response.status_code, response.json()["error"]) == (status, code)
        assert session_id in response.json()["message"]
        ops, begins = counted.take()
        assert ops == ["read_turn"]
        assert begins == (1 if isinstance(backend, SQLBackend) else 0)
    clock.now += timedelta(seconds=TIMEOUT)
    expired = await chat(http, "tenant_a:alice", KEY_A, sid)
    assert expired.status_code == 410
    assert expired.json() == {
        "error": "session_expired",
        "message": f"session expired: {sid!r}",
        "session_id": sid,
    }
    assert counted.take()[0] == ["read_turn"]
    assert agent.turns == ran  # refused before the agent ran
    history = backend.get_messages(ALICE.with_session(sid))
    assert [m.content for m in history] == ["hello", "seen 0"]  # nothing written


async def test_a_sessions_history_is_one_read_expired_or_not_and_only_its_owners(
    backend: Backend, http: httpx.AsyncClient, clock: Clock
) -> None:
    """``GET /v1/sessions/{id}``: the session (expired too) and its whole history in one
    transaction; another user's or an unknown id is 404 after that one read."""
    sid = (await chat(http, "tenant_a:alice", KEY_A)).json()["session_id"]
    await chat(http, "tenant_a:alice", KEY_A, sid)
    counted = Counted(backend)
    clock.now += timedelta(seconds=TIMEOUT)  # expired: still readable
    got = await http.get(f"/v1/sessions/{sid}", headers=as_user("tenant_a:alice", KEY_A))
    assert got.status_code == 200
    assert [m["content"] for m in got.json()["messages"]] == ["hello", "seen 0", "hello", "seen 2"]
    assert counted.take() == (["read_turn"], 1 if isinstance(backend, SQLBackend) else 0)
    for user, key in (("tenant_a:bob", KEY_A), ("tenant_b:alice", KEY_B)):
        refused = await http.get(f"/v1/sessions/{sid}", headers=as_user(user, key))
        assert (refused.status_code, refused.json()["error"]) == (404, "session_not_found")
        assert "hello" not in refused.text
        assert counted.take()[0] == ["read_turn"]
