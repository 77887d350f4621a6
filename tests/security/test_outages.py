"""Outages without duplicates or hangs: deadlines, idempotent retries, quiet logs.

Each test runs its own PostgreSQL (``own_server``, never the suite's shared one), frozen with
SIGSTOP or crashed with ``pg_ctl stop -m immediate``, behind the real ASGI app.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import httpx
import pytest

from muxi_isolation import Isolation, KeyRing, Scope
from muxi_isolation.client import AsyncFormation
from muxi_isolation.server import create_app
from muxi_isolation.stores.sql import SQLBackend

USER = "tenant_a:alice"
DEADLINE = 1.0


def served(backend: SQLBackend, **options: Any) -> tuple[Isolation, httpx.AsyncClient, str]:
    isolation = Isolation(backend)
    keys = KeyRing()
    key = keys.add_client_key("tenant_a")
    app = create_app(isolation, keys, **options)
    transport = httpx.ASGITransport(app=app)
    return isolation, httpx.AsyncClient(transport=transport, base_url="http://t"), key


def open_backend(server: Any, **options: Any) -> SQLBackend:
    return SQLBackend(
        server.app,
        admin_url=server.admin,
        schema=f"o_{secrets.token_hex(4)}",
        embedding_dimension=None,
        **options,
    )


def stored_turns(backend: SQLBackend) -> list[str]:
    user = Scope.parse(USER)
    return [
        str(m.content)
        for record in backend.list_sessions(user)
        for m in backend.get_messages(user.with_session(record.id))
        if m.role == "user"
    ]


async def test_a_frozen_database_is_answered_503_within_the_deadline_and_stores_nothing(
    own_server: Any,
) -> None:
    backend = open_backend(own_server, statement_timeout=DEADLINE)
    _, http, key = served(backend, request_timeout=DEADLINE)
    headers = {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": USER}
    try:
        assert stored_turns(backend) == []  # installs the schema: not the first turn's work
        for _ in range(10):  # a loaded machine can take the 1 s deadline; a 503 stores nothing
            ok = await http.post("/v1/chat", json={"message": "before"}, headers=headers)
            if ok.status_code == 200:
                break
        assert ok.status_code == 200
        own_server.pause()
        try:
            started = time.monotonic()
            sends = [
                http.post("/v1/chat", json={"message": f"frozen {i}"}, headers=headers)
                for i in range(6)
            ]
            answers = await asyncio.wait_for(asyncio.gather(*sends), 10)  # never a hang
            took = time.monotonic() - started
            await asyncio.sleep(1.0)  # the database stays frozen past every deadline
        finally:
            own_server.resume()
        assert [a.status_code for a in answers] == [503] * 6
        assert {a.json()["error"] for a in answers} == {"deadline_exceeded"}
        assert all(a.headers["retry-after"] == "1" for a in answers)
        assert took < DEADLINE + 1.5  # all at once, each within its deadline
        await asyncio.sleep(2 * DEADLINE)  # whatever was in flight has reached the database
        for _ in range(20):  # and the server recovers
            after = await http.post("/v1/chat", json={"message": "after"}, headers=headers)
            if after.status_code == 200:
                break
            await asyncio.sleep(0.25)
        assert after.status_code == 200
        assert sorted(stored_turns(backend)) == ["after", "before"]  # nothing frozen landed
    finally:
        await http.aclose()
        await backend.aclose()


async def test_a_retry_across_a_crash_with_its_key_stores_once(own_server: Any) -> None:
    backend = open_backend(own_server)
    _, http, key = served(backend)
    headers = {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": USER, "Idempotency-Key": "turn-1"}
    body = {"message": "exactly once"}
    try:
        first = await http.post("/v1/chat", json=body, headers=headers)
        assert first.status_code == 200
        own_server.crash()
        during = await http.post("/v1/chat", json=body, headers=headers)
        assert during.status_code == 503 and during.headers["retry-after"] == "1"
        own_server.restart()
        for _ in range(20):
            again = await http.post("/v1/chat", json=body, headers=headers)
            if again.status_code != 503:
                break
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert stored_turns(backend) == ["exactly once"]
        other = await http.post("/v1/chat", json={"message": "another"}, headers=headers)
        assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    finally:
        await http.aclose()
        await backend.aclose()


async def test_the_client_retries_503s_with_one_key_and_stores_once(own_server: Any) -> None:
    """The answer to a stored turn is lost (503 after the write): the client's retry, with
    the same key, is answered from the receipt."""
    backend = open_backend(own_server)
    isolation = Isolation(backend)
    keys = KeyRing()
    key = keys.add_client_key("tenant_a")
    app = create_app(isolation, keys)
    seen: list[str | None] = []

    async def lossy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        seen.append(headers.get(b"idempotency-key", b"").decode() or None)
        if len(seen) > 1:
            await app(scope, receive, send)
            return

        async def swallow(message: Any) -> None:  # stored, but the answer is lost
            pass

        await app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    transport = httpx.ASGITransport(app=lossy)
    formation = AsyncFormation("http://t", key, user_id=USER, transport=transport, backoff=0.01)
    try:
        answer = await formation.chat("only once")
        assert len(seen) == 2 and seen[0] is not None and seen[0] == seen[1]
        assert answer.response
        assert stored_turns(backend) == ["only once"]
    finally:
        await formation.aclose()
        await backend.aclose()


async def test_a_five_second_outage_writes_a_few_log_lines(
    own_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = open_backend(own_server)
    _, http, key = served(backend)
    headers = {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": USER}
    try:
        assert (await http.get("/v1/sessions", headers=headers)).status_code == 200
        own_server.crash()
        failed = 0
        with caplog.at_level(logging.INFO, logger="muxi_isolation.server"):
            ends = time.monotonic() + 5.0
            while time.monotonic() < ends:
                answer = await http.get("/v1/sessions", headers=headers)
                failed += answer.status_code == 503
                await asyncio.sleep(0.02)
            own_server.restart()
            for _ in range(20):
                if (await http.get("/v1/sessions", headers=headers)).status_code == 200:
                    break
        logged = [r for r in caplog.records if r.name == "muxi_isolation.server"]
        text = "\n".join(caplog.text.splitlines())
        assert failed >= 50
        assert len(logged) <= 6  # a trace per cause, a summary every 5 s, "recovered"
        assert len(text.encode()) < 30_000  # it was 7.7 MB
        assert any(r.getMessage().startswith("recovered") for r in logged)
    finally:
        await http.aclose()
        await backend.aclose()
