from __future__ import annotations

from datetime import timedelta

import pytest
from _clock import Clock

from muxi_isolation import (
    Backend,
    InvalidIdentifier,
    MissingScope,
    Scope,
    SessionExists,
    SessionExpired,
    SessionManager,
    SessionNotFound,
)
from muxi_isolation.sessions import new_session_id

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(backend: Backend, clock: Clock) -> SessionManager:
    return SessionManager(backend, timeout=3600, clock=clock)


def test_session_ids_are_random_and_prefixed() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:
        assert sid.startswith("sess_")
        assert len(sid) - 5 >= 32  # 24 random bytes, base64url: 192 bits


def test_create_has_the_seed_shape(manager: SessionManager, clock: Clock) -> None:
    s = manager.create(Scope.parse("user_123", session_id="ignored"))
    assert s.id.startswith("sess_")
    assert s.user_id == "user_123"
    assert s.created_at == clock.now == s.last_active_at
    assert s.expires_at == clock.now + timedelta(hours=1)
    assert manager.get(Scope.parse("user_123"), s.id) == s


def test_foreign_and_unknown_ids_give_the_same_error(manager: SessionManager) -> None:
    s = manager.create(ALICE)
    messages = []
    for scope, sid in ((BOB, s.id), (ALICE, "sess_unknown"), (Scope("tenant_b", "alice"), s.id)):
        with pytest.raises(SessionNotFound) as info:
            manager.get(scope, sid)
        messages.append(str(info.value).replace(sid, "<id>"))
        with pytest.raises(SessionNotFound):
            manager.touch(scope, sid)
        with pytest.raises(SessionNotFound):
            manager.delete(scope, sid)
    assert len(set(messages)) == 1
    assert manager.get(ALICE, s.id) == s


def test_idle_timeout_and_touch(manager: SessionManager, clock: Clock) -> None:
    s = manager.create(ALICE)
    clock.advance(3000)
    touched = manager.touch(ALICE, s.id)
    assert touched.expires_at == clock.now + timedelta(hours=1)
    clock.advance(3000)  # 6000 s after creation, but only 3000 idle
    assert manager.active(ALICE, s.id).id == s.id
    clock.advance(600)
    with pytest.raises(SessionExpired):
        manager.touch(ALICE, s.id)
    with pytest.raises(SessionExpired):
        manager.active(ALICE, s.id)
    assert manager.get(ALICE, s.id).id == s.id  # still readable until purged


def test_expire_now(manager: SessionManager) -> None:
    s = manager.create(ALICE)
    manager.expire(ALICE, s.id)
    with pytest.raises(SessionExpired):
        manager.active(ALICE, s.id)
    with pytest.raises(SessionNotFound):
        manager.expire(BOB, s.id)


def test_list_is_per_user(manager: SessionManager, clock: Clock) -> None:
    a1 = manager.create(ALICE)
    clock.advance(1)
    a2 = manager.create(ALICE)
    manager.create(BOB)
    assert [s.id for s in manager.list(ALICE)] == [a1.id, a2.id]
    assert len(manager.list(BOB)) == 1
    assert manager.list(Scope("tenant_b", "alice")) == []


def test_ensure_creates_then_touches(manager: SessionManager, clock: Clock) -> None:
    first = manager.ensure(ALICE, "chat_history")
    assert first.id == "chat_history"
    clock.advance(10)
    again = manager.ensure(ALICE, "chat_history")
    assert again.created_at == first.created_at and again.last_active_at == clock.now
    assert manager.ensure(BOB, "chat_history").scope == BOB  # same key, other user
    with pytest.raises(SessionExists):
        manager.create(ALICE, "chat_history")


def test_delete(manager: SessionManager) -> None:
    s = manager.create(ALICE)
    manager.delete(ALICE, s.id)
    with pytest.raises(SessionNotFound):
        manager.get(ALICE, s.id)


def test_bad_input(manager: SessionManager, backend: Backend) -> None:
    with pytest.raises(MissingScope):
        manager.create(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier):
        manager.get(ALICE, "bad\x00id")
    with pytest.raises(InvalidIdentifier):
        manager.create(ALICE, " padded")
    with pytest.raises(ValueError):
        SessionManager(backend, timeout=0)
    assert manager.list(ALICE) == []


async def test_async_twins(manager: SessionManager, clock: Clock) -> None:
    s = await manager.acreate(ALICE)
    assert (await manager.aget(ALICE, s.id)) == s
    with pytest.raises(SessionNotFound):
        await manager.aget(BOB, s.id)
    clock.advance(100)
    assert (await manager.atouch(ALICE, s.id)).last_active_at == clock.now
    assert [x.id for x in await manager.alist(ALICE)] == [s.id]
    k = await manager.aensure(ALICE, "key")
    assert (await manager.aensure(ALICE, "key")).created_at == k.created_at
    await manager.aexpire(ALICE, s.id)
    with pytest.raises(SessionExpired):
        await manager.aactive(ALICE, s.id)
    await manager.adelete(ALICE, s.id)
    with pytest.raises(SessionNotFound):
        await manager.adelete(ALICE, s.id)


def test_touch_of_a_session_created_meanwhile_renews_it(
    manager: SessionManager, backend: Backend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writes of a new LangGraph thread race: one creates the session between the
    other's renew (nothing yet) and its second look. That is not an expired session."""
    real = backend.renew_session
    calls: list[str] = []

    def renew_before_the_other_request_created_it(scope, sid, **times):  # type: ignore[no-untyped-def]
        calls.append(sid)
        if len(calls) == 1:
            manager.create(scope, sid)  # the other request wins
            return None
        return real(scope, sid, **times)

    monkeypatch.setattr(backend, "renew_session", renew_before_the_other_request_created_it)
    record = manager.ensure(ALICE, "thread-1")
    assert (record.id, record.last_active_at) == ("thread-1", clock.now)
    assert calls == ["thread-1", "thread-1"]
