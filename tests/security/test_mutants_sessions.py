"""Session decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/sessions.py`` that ``tests/test_sessions.py`` let through,
mostly in the async half, so every test here runs both halves on every backend.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from muxi_isolation import (
    Backend,
    InvalidIdentifier,
    Message,
    Scope,
    SessionExpired,
    SessionManager,
    SessionNotFound,
)
from muxi_isolation.sessions import new_session_id, utc_now

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
TIMEOUT = timedelta(seconds=3600)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 8, 10, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(backend: Backend, clock: Clock) -> SessionManager:
    return SessionManager(backend, timeout=TIMEOUT.total_seconds(), clock=clock)


async def call(manager: SessionManager, half: str, name: str, *args: Any) -> Any:
    """``manager.name(*args)`` on the sync half, ``await manager.aname(*args)`` on the other."""
    if half == "sync":
        return getattr(manager, name)(*args)
    result = getattr(manager, "a" + name)(*args)
    assert inspect.isawaitable(result)
    return await result


def test_utc_now_is_aware() -> None:
    assert utc_now().tzinfo is timezone.utc


async def test_create_and_ensure_keep_the_chosen_id(manager: SessionManager, half: str) -> None:
    assert (await call(manager, half, "create", ALICE, "chosen")).id == "chosen"
    made = await call(manager, half, "ensure", ALICE, "fresh")
    assert made.id == "fresh"
    assert (await call(manager, half, "get", ALICE, "fresh")).id == "fresh"


@pytest.mark.parametrize("op", ["get", "active", "touch", "delete", "ensure"])
async def test_bad_session_id_names_the_field(manager: SessionManager, half: str, op: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        await call(manager, half, op, ALICE, " padded")
    assert caught.value.field == "session_id"


@pytest.mark.parametrize("op", ["get", "active", "touch", "expire", "delete"])
async def test_another_users_session_is_not_found_and_untouched(
    manager: SessionManager, clock: Clock, half: str, op: str
) -> None:
    theirs = manager.create(BOB, "shared-name")
    clock.advance(60)
    with pytest.raises(SessionNotFound) as caught:
        await call(manager, half, op, ALICE, "shared-name")
    assert caught.value.session_id == "shared-name"
    assert manager.get(BOB, "shared-name") == theirs  # not renewed, expired nor deleted


async def test_touch_and_ensure_renew_from_now(
    manager: SessionManager, clock: Clock, half: str
) -> None:
    manager.create(ALICE, "s")
    for op in ("touch", "ensure"):
        clock.advance(100)
        renewed = await call(manager, half, op, ALICE, "s")
        assert renewed.expires_at == clock.now + TIMEOUT
        assert renewed.last_active_at == clock.now
        assert manager.get(ALICE, "s") == renewed
    assert [s.id for s in manager.list(ALICE)] == ["s"]


@pytest.mark.parametrize("op", ["active", "touch"])
async def test_expired_session_is_refused(
    manager: SessionManager, clock: Clock, half: str, op: str
) -> None:
    manager.create(ALICE, "s")
    clock.advance(TIMEOUT.total_seconds() + 1)
    with pytest.raises(SessionExpired) as caught:
        await call(manager, half, op, ALICE, "s")
    assert caught.value.session_id == "s"


async def test_active_returns_the_session(manager: SessionManager, half: str) -> None:
    made = manager.create(ALICE, "s")
    assert await call(manager, half, "active", ALICE, "s") == made


@pytest.fixture
def racing(
    backend: Backend, manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Another request creates ALICE's session ``s`` right after our first renew missed it
    (real storage; the hook only orders the two requests)."""
    real, areal = backend.renew_session, backend.arenew_session
    calls: list[str] = []

    def renew(*args: Any, **kw: Any) -> Any:
        result = real(*args, **kw)
        if not calls:
            calls.append("renew")
            manager.create(ALICE, "s")  # the other request
        return result

    async def arenew(*args: Any, **kw: Any) -> Any:
        result = await areal(*args, **kw)
        if not calls:
            calls.append("arenew")
            manager.create(ALICE, "s")
        return result

    monkeypatch.setattr(backend, "renew_session", renew)
    monkeypatch.setattr(backend, "arenew_session", arenew)
    yield calls


async def test_touch_renews_a_session_created_meanwhile(
    manager: SessionManager, clock: Clock, half: str, racing: list[str]
) -> None:
    clock.advance(5)
    renewed = await call(manager, half, "touch", ALICE, "s")
    assert renewed.id == "s"
    assert renewed.scope == ALICE
    assert renewed.expires_at == clock.now + TIMEOUT
    assert manager.get(ALICE, "s") == renewed
    assert racing == ["renew" if half == "sync" else "arenew"]


async def test_append_writes_and_extends(manager: SessionManager, clock: Clock, half: str) -> None:
    manager.create(ALICE, "s")
    clock.advance(100)
    stored = await call(manager, half, "append", ALICE.with_session("s"), [Message("user", "hi")])
    assert [m.content for m in stored] == ["hi"]
    assert stored[0].scope == ALICE.with_session("s")
    assert manager.get(ALICE, "s").expires_at == clock.now + TIMEOUT


async def test_append_refuses_expired_and_foreign_sessions(
    manager: SessionManager, clock: Clock, half: str
) -> None:
    manager.create(ALICE, "old")
    manager.create(BOB, "theirs")
    clock.advance(TIMEOUT.total_seconds() + 1)
    with pytest.raises(SessionExpired):
        await call(manager, half, "append", ALICE.with_session("old"), [Message("user", "x")])
    with pytest.raises(SessionNotFound):
        await call(manager, half, "append", ALICE.with_session("theirs"), [Message("user", "x")])
    assert manager.backend.get_messages(BOB.with_session("theirs")) == []


def test_session_ids_hold_192_random_bits() -> None:
    # "sess_" and 24 random bytes in URL-safe base64 (32 characters)
    assert len(new_session_id()) == 5 + 32


def test_any_positive_timeout_is_taken(backend: Backend) -> None:
    assert SessionManager(backend, timeout=0.5).timeout == timedelta(seconds=0.5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            SessionManager(backend, timeout=bad)
