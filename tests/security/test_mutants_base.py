"""Backend decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/stores/base.py`` that tests/stores/test_backends.py and
tests/security/test_both_halves.py let through, mostly in the async half: every test here
runs both halves on every backend, with Bob holding the same ids as Alice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from muxi_isolation import (
    Backend,
    Memory,
    Message,
    MissingScope,
    QuotaExceeded,
    Scope,
    SessionRecord,
)
from muxi_isolation.filters import Compare
from muxi_isolation.quotas import Limits

NOW = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
CAROL = Scope("tenant_b", "carol")


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def call(backend: Backend, half: str, name: str, *args: Any, **kw: Any) -> Any:
    if half == "sync":
        return getattr(backend, name)(*args, **kw)
    return await getattr(backend, "a" + name)(*args, **kw)


def session(backend: Backend, who: Scope, sid: str = "s", *, expires: datetime = NOW) -> Scope:
    backend.insert_session(who, SessionRecord(sid, who, NOW - HOUR, NOW - HOUR, expires))
    return who.with_session(sid)


async def test_touch_and_renew_store_the_times_given(backend: Backend, half: str) -> None:
    for who in (ALICE, BOB):
        session(backend, who, expires=NOW + HOUR)
    assert await call(backend, half, "touch_session", ALICE, "s", NOW, NOW + 2 * HOUR)
    found = backend.get_session(ALICE, "s")
    assert found is not None and (found.last_active_at, found.expires_at) == (NOW, NOW + 2 * HOUR)
    renewed = await call(
        backend, half, "renew_session", ALICE, "s", now=NOW, expires_at=NOW + 3 * HOUR
    )
    assert renewed is not None and renewed.expires_at == NOW + 3 * HOUR
    assert backend.get_session(ALICE, "s") == renewed
    theirs = backend.get_session(BOB, "s")
    assert theirs is not None and theirs.expires_at == NOW + HOUR  # untouched


@pytest.mark.parametrize("name", ["replace_messages", "restore_messages"])
async def test_session_writes_need_a_session_even_when_empty(
    backend: Backend, half: str, name: str
) -> None:
    s = session(backend, ALICE, expires=NOW + HOUR)
    backend.append_messages(s, [Message("user", "kept")])
    with pytest.raises(MissingScope):
        await call(backend, half, name, ALICE, [])
    assert [m.content for m in backend.get_messages(s)] == ["kept"]


async def test_count_and_delete_one_message(backend: Backend, half: str) -> None:
    for who in (ALICE, BOB):
        s = session(backend, who, expires=NOW + HOUR)
        backend.append_messages(s, [Message("user", "a"), Message("user", "b", status="done")])
    mine = ALICE.with_session("s")
    assert await call(backend, half, "count_messages", mine, status="done") == 1
    assert await call(backend, half, "delete_message", mine, 99) is None  # no such seq
    gone = await call(backend, half, "delete_message", mine, 1)
    assert gone is not None and (gone.content, gone.scope) == ("a", mine)
    assert backend.count_messages(BOB.with_session("s")) == 2


async def test_purge_without_a_tenant_purges_every_tenant(backend: Backend, half: str) -> None:
    for who in (ALICE, CAROL):
        session(backend, who, "old", expires=NOW - HOUR)
        session(backend, who, "live", expires=NOW + HOUR)
    await call(backend, half, "purge_expired", NOW)
    for who in (ALICE, CAROL):
        assert [r.id for r in backend.list_sessions(who)] == ["live"]


async def test_message_writes_refuse_a_user_level_scope(backend: Backend, half: str) -> None:
    s = session(backend, ALICE, expires=NOW + HOUR)
    with pytest.raises(MissingScope):
        await call(backend, half, "append_messages", ALICE, [Message("user", "lost")])
    with pytest.raises(MissingScope):
        await call(
            backend, half, "append_to_session", ALICE, [Message("user", "lost")],
            now=NOW, expires_at=NOW + 2 * HOUR,
        )  # fmt: skip
    assert backend.get_messages(s) == [] and backend.list_message_sessions(ALICE) == []


async def test_a_turn_that_opens_its_session_gets_the_expiry_given(
    backend: Backend, half: str
) -> None:
    mine = ALICE.with_session("new")
    opened = SessionRecord("new", mine, NOW, NOW, NOW + HOUR)
    await call(
        backend, half, "append_to_session", mine, [Message("user", "hi")],
        now=NOW, expires_at=NOW + 2 * HOUR, create=opened,
    )  # fmt: skip
    found = backend.get_session(ALICE, "new")
    assert found is not None and found.expires_at == NOW + 2 * HOUR
    assert [m.content for m in backend.get_messages(mine)] == ["hi"]


def _fill(backend: Backend) -> None:
    for who in (ALICE, BOB):  # the same ids for both users
        backend.upsert_memories(
            who,
            [
                Memory("a", "apple pie", {"kind": "fruit"}, [1.0, 0.0]),
                Memory("b", "beet soup", {"kind": "root"}, [0.9, 0.1]),
                Memory("c", "cherry jam", {"kind": "fruit"}, [0.8, 0.2]),
            ],
        )


async def test_filters_and_windows_hold_on_both_halves(backend: Backend, half: str) -> None:
    _fill(backend)
    fruit = {"kind": "fruit"}
    listed = await call(backend, half, "list_memories", ALICE, filter=fruit, limit=1, offset=1)
    assert [m.id for m in listed] == ["c"]
    found = await call(backend, half, "search_memories", ALICE, [1.0, 0.0], 4, filter=fruit)
    assert [m.id for m, _ in found] == ["a", "c"]
    words = await call(
        backend, half, "search_memories", ALICE, None, 4,
        mode="text", text="soup jam pie", filter=fruit, text_k=1,
    )  # fmt: skip
    assert len(words) == 1 and words[0][0].id in {"a", "c"}
    every = await call(
        backend, half, "search_memories", ALICE, None, 4, mode="text", text="soup jam pie"
    )
    assert sorted(m.id for m, _ in every) == ["a", "b", "c"]  # text_k defaults to k
    hybrid = await call(
        backend, half, "search_memories", ALICE, [1.0, 0.0], 4,
        mode="hybrid", text="soup", filter=fruit,
    )  # fmt: skip
    assert sorted(m.id for m, _ in hybrid) == ["a", "c"]


async def test_a_delete_by_filter_tree_deletes_only_its_matches(
    backend: Backend, half: str
) -> None:
    _fill(backend)
    gone = await call(
        backend, half, "delete_memories", ALICE, filter=Compare("kind", "$eq", "fruit")
    )
    assert gone == 2 and [m.id for m in backend.list_memories(ALICE)] == ["b"]
    assert len(backend.list_memories(BOB)) == 3


async def test_a_message_window_holds_on_both_halves(backend: Backend, half: str) -> None:
    s = session(backend, ALICE, expires=NOW + HOUR)
    backend.append_messages(
        s, [Message("user", "a"), Message("user", "b", status="done"), Message("user", "c")]
    )
    window = await call(backend, half, "get_messages", s, limit=1, offset=1)
    assert [m.content for m in window] == ["b"]
    done = await call(backend, half, "get_messages", s, status="done")
    assert [m.content for m in done] == ["b"]


async def test_a_tenants_own_message_size_limit_holds(backend: Backend, half: str) -> None:
    backend.limits = Limits(tenants={"tenant_a": Limits(max_message_bytes=8)})
    s = session(backend, ALICE, expires=NOW + HOUR)
    with pytest.raises(QuotaExceeded):
        await call(backend, half, "append_messages", s, [Message("user", "far too long")])
    assert backend.get_messages(s) == []
