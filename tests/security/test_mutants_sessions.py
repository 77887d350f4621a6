"""Session decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/sessions.py`` that ``tests/test_sessions.py`` let through,
mostly in the async half, so every test here runs both halves on every backend.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest
from _clock import Clock

from muxi_isolation import (
    Backend,
    InvalidIdentifier,
    InvalidInput,
    Message,
    MissingScope,
    Scope,
    SessionExpired,
    SessionManager,
    SessionNotFound,
)
from muxi_isolation.sessions import new_session_id, utc_now

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
TIMEOUT = timedelta(seconds=3600)


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


# -- new_record, the ensure race, idempotent appends (both halves) ------------------------


def test_new_record_is_stamped_for_the_scopes_user(manager: SessionManager) -> None:
    made = manager.new_record(ALICE.with_session("elsewhere"), "chosen")
    assert (made.id, made.scope) == ("chosen", ALICE)  # the user, not the session given
    assert manager.new_record(BOB).scope == BOB
    with pytest.raises(MissingScope):
        manager.new_record(None, "chosen")  # type: ignore[arg-type]


@pytest.fixture
def created_meanwhile(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Another request creates ALICE's session ``s`` just before our insert of it (real
    storage; the hook only orders the two requests)."""
    real, areal = backend.insert_session, backend.ainsert_session
    calls: list[str] = []

    def insert(scope: Scope, record: Any, **kw: Any) -> Any:
        calls.append("insert")
        real(scope, record, **kw)  # the other request's
        return real(scope, record, **kw)

    async def ainsert(scope: Scope, record: Any, **kw: Any) -> Any:
        calls.append("ainsert")
        await areal(scope, record, **kw)
        return await areal(scope, record, **kw)

    monkeypatch.setattr(backend, "insert_session", insert)
    monkeypatch.setattr(backend, "ainsert_session", ainsert)
    return calls


async def test_ensure_touches_a_session_another_request_created(
    manager: SessionManager, clock: Clock, half: str, created_meanwhile: list[str]
) -> None:
    clock.advance(5)
    made = await call(manager, half, "ensure", ALICE, "s")
    assert (made.id, made.scope, made.expires_at) == ("s", ALICE, clock.now + TIMEOUT)
    assert created_meanwhile == ["insert" if half == "sync" else "ainsert"]


TURN = [Message("user", "hello"), Message("assistant", "hi")]


async def keyed(manager: SessionManager, half: str, scope: Scope, key: str) -> list[Message]:
    if half == "sync":
        return manager.append(scope, TURN, idempotency_key=key)
    return await manager.aappend(scope, TURN, idempotency_key=key)


async def test_a_keyed_append_stores_its_receipt_and_replays(
    manager: SessionManager, half: str
) -> None:
    s = ALICE.with_session(manager.create(ALICE, "s").id)
    first = await keyed(manager, half, s, "k1")
    assert [(m.content, m.scope) for m in first] == [("hello", s), ("hi", s)]
    receipt = manager.backend.get_receipt(ALICE, "k1")
    assert receipt is not None and receipt.seqs == tuple(m.seq for m in first)
    assert manager.append(s, TURN, idempotency_key="k1") == first  # replayed, not stored
    assert len(manager.backend.get_messages(s)) == 2


async def test_a_retry_after_the_session_expired_still_replays(
    manager: SessionManager, clock: Clock, half: str
) -> None:
    # the retry is answered from the receipt before the session is looked at
    s = ALICE.with_session(manager.create(ALICE, "s").id)
    first = manager.append(s, TURN, idempotency_key="k1")
    clock.advance(TIMEOUT.total_seconds() + 1)
    assert await keyed(manager, half, s, "k1") == first


async def test_no_session_is_refused_before_the_key_is_looked_up(
    manager: SessionManager, half: str
) -> None:
    s = ALICE.with_session(manager.create(ALICE, "s").id)
    manager.append(s, TURN, idempotency_key="k1")
    with pytest.raises(MissingScope):  # not KeyReused: the call is wrong before its key
        await keyed(manager, half, ALICE, "k1")


@pytest.fixture
def twin(backend: Backend, manager: SessionManager, monkeypatch: pytest.MonkeyPatch) -> list[Scope]:
    """A twin request (the same turn under the same key) stores itself right after our first
    receipt lookup missed, in the session the test puts in the list (real storage; the hook
    only orders the two requests)."""
    real, areal = backend.get_receipt, backend.aget_receipt
    pending: list[Scope] = []

    def store_twin() -> None:
        if pending:
            manager.append(pending.pop(), TURN, idempotency_key="k1")

    def get(scope: Scope, key: str) -> Any:
        found = real(scope, key)
        store_twin()
        return found

    async def aget(scope: Scope, key: str) -> Any:
        found = await areal(scope, key)
        store_twin()
        return found

    monkeypatch.setattr(backend, "get_receipt", get)
    monkeypatch.setattr(backend, "aget_receipt", aget)
    return pending


async def test_a_twin_stored_meanwhile_is_replayed(
    manager: SessionManager, half: str, twin: list[Scope]
) -> None:
    s = ALICE.with_session(manager.create(ALICE, "s").id)
    twin.append(s)
    got = await keyed(manager, half, s, "k1")
    stored = manager.backend.get_messages(s)
    assert [m.content for m in stored] == ["hello", "hi"]  # the twin's, once
    assert got == stored


def test_a_receipt_gone_between_two_reads_is_a_missing_session() -> None:
    with pytest.raises(SessionNotFound) as caught:
        SessionManager._stored(ALICE.with_session("s"), None, [])
    assert caught.value.session_id == "s"


@pytest.mark.parametrize("bad", [0, 1e20])  # not positive; too long for a timedelta
def test_a_bad_timeout_names_its_field(backend: Backend, bad: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        SessionManager(backend, timeout=bad)
    assert caught.value.field == "timeout"


async def test_a_bad_chosen_id_names_the_field(manager: SessionManager, half: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        await call(manager, half, "create", ALICE, " padded")
    assert caught.value.field == "session_id"
    with pytest.raises(InvalidIdentifier) as caught:
        manager.new_record(ALICE, " padded")
    assert caught.value.field == "session_id"


@pytest.fixture
def twin_then_forgotten(
    backend: Backend, manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> list[Scope]:
    """As ``twin``, and the user is forgotten (receipts with her) just before our second
    lookup. Lookups: 1 ours (misses, then the twin is stored), 2 the twin's, 3 ours again."""
    real, areal = backend.get_receipt, backend.aget_receipt
    pending: list[Scope] = []
    lookups: list[int] = []

    def before() -> int:
        lookups.append(len(lookups) + 1)
        if lookups[-1] == 3:
            backend.forget_user(ALICE)
        return lookups[-1]

    def after(n: int) -> None:
        if n == 1:
            manager.append(pending.pop(), TURN, idempotency_key="k1")

    def get(scope: Scope, key: str) -> Any:
        n = before()
        found = real(scope, key)
        after(n)
        return found

    async def aget(scope: Scope, key: str) -> Any:
        n = before()
        found = await areal(scope, key)
        after(n)
        return found

    monkeypatch.setattr(backend, "get_receipt", get)
    monkeypatch.setattr(backend, "aget_receipt", aget)
    return pending


async def test_a_twin_forgotten_meanwhile_is_a_missing_session(
    manager: SessionManager, half: str, twin_then_forgotten: list[Scope]
) -> None:
    s = ALICE.with_session(manager.create(ALICE, "s").id)
    twin_then_forgotten.append(s)
    with pytest.raises(SessionNotFound) as caught:
        await keyed(manager, half, s, "k1")
    assert caught.value.session_id == "s"
