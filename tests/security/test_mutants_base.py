"""Backend decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/stores/base.py`` that tests/stores/test_backends.py and
tests/security/test_both_halves.py let through, mostly in the async half: every test here
runs both halves on every backend, with Bob holding the same ids as Alice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from muxi_isolation import Backend, Message, MissingScope, Scope, SessionRecord

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
