from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from muxi_isolation import (
    Backend,
    InvalidIdentifier,
    Isolation,
    MissingScope,
    Scope,
    SessionExpired,
    SessionMessages,
    SessionNotFound,
    UserMemories,
)


def test_seed_sdk_flow(backend: Backend) -> None:
    iso = Isolation(backend)
    session = iso.create_session(user_id="user_123")
    iso.messages(session.id, user_id="user_123").add("user", "Hello", client="sdk")
    iso.messages(session.id, user_id="user_123").add("assistant", "Hi!")
    history = iso.history(session.id, user_id="user_123")
    assert [(m.role, m.content) for m in history] == [("user", "Hello"), ("assistant", "Hi!")]
    assert history[0].metadata == {"client": "sdk"}
    assert [s.id for s in iso.list_sessions("user_123")] == [session.id]
    got = iso.get_session(session.id, "user_123")
    assert (got.id, got.created_at) == (session.id, session.created_at)
    assert got.last_active_at > session.last_active_at  # each write touches the session
    with pytest.raises(SessionNotFound):
        iso.history(session.id, user_id="user_456")
    with pytest.raises(SessionNotFound):
        iso.messages(session.id, user_id="tenant_a:user_123")


def test_memory_is_per_user_and_outlives_sessions(backend: Backend) -> None:
    now = [datetime(2025, 1, 8, tzinfo=timezone.utc)]
    iso = Isolation(backend, session_timeout=60, clock=lambda: now[0])
    a = iso.create_session("tenant_a:user_1")
    iso.memories("tenant_a:user_1").add(
        "likes Python", {"kind": "preference"}, embedding=[1.0, 0.0]
    )
    now[0] += timedelta(seconds=61)
    with pytest.raises(SessionExpired):
        iso.messages(a.id, "tenant_a:user_1").add("user", "still there?")
    kept = iso.memories("tenant_a:user_1").list(filter={"kind": "preference"})
    assert [m.content for m in kept] == ["likes Python"]
    assert iso.memories("tenant_b:user_1").list() == []
    assert iso.memories("tenant_a:user_2").search([1.0, 0.0]) == []
    assert iso.history(a.id, "tenant_a:user_1") == []


def test_memories_with_an_embed_function(backend: Backend) -> None:
    def embed(text: str) -> list[float]:
        return [float(text.count("python")), float(text.count("rust")), 0.1]

    iso = Isolation(backend, embed=embed)
    mine = iso.memories("u1")
    py = mine.add("python python")
    rs = mine.add("rust", id="fixed-id")
    assert rs == "fixed-id"
    assert [m.id for m, _ in mine.search("python", k=1)] == [py]
    assert [m.id for m in mine.get([py, "nope"])] == [py]
    assert mine.delete([rs]) == 1
    assert mine.delete(filter={"x": 1}) == 0
    assert mine.delete() == 1
    with pytest.raises(ValueError, match="embed"):
        Isolation(backend).memories("u1").search("text")


def test_clear_and_last(backend: Backend) -> None:
    iso = Isolation(backend)
    s = iso.create_session("u")
    msgs = iso.messages(s.id, "u")
    for i in range(5):
        msgs.add("user", f"m{i}")
    assert [m.content for m in msgs.get(last=2)] == ["m3", "m4"]
    assert msgs.clear() == 5
    assert msgs.get() == []


def test_forget_user(backend: Backend) -> None:
    iso = Isolation(backend)
    s = iso.create_session("t:a")
    iso.messages(s.id, "t:a").add("user", "x")
    iso.memories("t:a").add("fact")
    iso.memories("t:b").add("other")
    assert iso.forget_user("t:a") == {"sessions": 1, "messages": 1, "memories": 1}
    assert iso.memories("t:b").list()[0].content == "other"


def test_bad_user_id_writes_nothing(backend: Backend) -> None:
    iso = Isolation(backend)
    with pytest.raises(InvalidIdentifier):
        iso.create_session(" bad")
    with pytest.raises(InvalidIdentifier):
        iso.memories("t:\x00").add("x")
    assert iso.list_sessions(None) == []


def test_from_config_memory_and_sqlite(tmp_path: Path) -> None:
    with Isolation.from_config(
        {"memory": {"persistent": {"provider": "memory"}, "session_timeout": 5}}
    ) as iso:
        assert iso.sessions.timeout == timedelta(seconds=5)
        s = iso.create_session()
        assert s.user_id == "0"
    scope = Isolation().scope("t:u", "s")
    assert (scope.tenant_id, scope.user_id, scope.session_id) == ("t", "u", "s")


async def test_handles_have_async_twins_that_agree(backend: Backend) -> None:
    iso = Isolation(backend, embed=lambda text: [float(len(text)), 1.0])
    s = iso.create_session("t:a")
    msgs, mems = iso.messages(s.id, "t:a"), iso.memories("t:a")
    msgs.add("user", "one")
    await msgs.aadd("assistant", "two", via="async")
    assert [m.content for m in await msgs.aget()] == [m.content for m in msgs.get()]
    assert (await msgs.aget(last=1))[0].metadata == {"via": "async"}
    first = mems.add("sync")
    second = await mems.aadd("async", {"k": 1})
    assert {m.id for m in await mems.alist()} == {m.id for m in mems.list()} == {first, second}
    assert [m.id for m in await mems.aget([second])] == [second]
    assert [m.id for m, _ in await mems.asearch("async", k=1, filter={"k": 1})] == [second]
    assert await mems.adelete([first]) == 1
    assert await msgs.aclear() == 2


def test_handles_refuse_a_missing_scope(backend: Backend) -> None:
    iso = Isolation(backend)
    with pytest.raises(MissingScope):
        SessionMessages(backend, iso.sessions, Scope("t", "a"))  # no session
    with pytest.raises(MissingScope):
        UserMemories(backend, None)  # type: ignore[arg-type]
