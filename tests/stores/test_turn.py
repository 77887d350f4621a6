"""``read_turn``: a session and its newest messages in one read, on every backend and both
halves, with the rules and errors of ``SessionManager.active``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

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
    SessionRecord,
)
from muxi_isolation.audit import MISSING, Auditor, AuditQuery, read_events
from muxi_isolation.stores.sql import SQLBackend

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")  # same user id, other tenant


@pytest.fixture(params=["sync", "async"])
def half(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def read_turn(backend: Backend, half: str, *args: Any, **kwargs: Any) -> Any:
    if half == "sync":
        return backend.read_turn(*args, **kwargs)
    return await backend.aread_turn(*args, **kwargs)


def seed(backend: Backend, who: Scope, sid: str, texts: list[str]) -> SessionRecord:
    record = SessionRecord(sid, who, T0, T0, T0 + HOUR)
    backend.insert_session(who, record)
    backend.append_messages(who.with_session(sid), [Message("user", t) for t in texts])
    return record


async def test_the_session_and_its_newest_messages_oldest_first(
    backend: Backend, half: str
) -> None:
    record = seed(backend, ALICE, "s1", [f"a{i}" for i in range(5)])
    seed(backend, BOB, "s1", ["bob"])  # same id, another user's
    seed(backend, ALICE, "s2", ["other session"])
    found, history = await read_turn(backend, half, ALICE, "s1", now=T0, last=3)
    assert found == record
    assert [m.content for m in history] == ["a2", "a3", "a4"]
    assert history == backend.get_messages(ALICE.with_session("s1"), last=3)
    found, history = await read_turn(backend, half, ALICE, "s1", now=T0, last=50)
    assert [m.content for m in history] == [f"a{i}" for i in range(5)]
    assert (await read_turn(backend, half, ALICE, "s1", now=T0, last=0)) == (record, [])


async def test_a_session_without_messages(backend: Backend, half: str) -> None:
    record = seed(backend, ALICE, "s1", [])
    seed(backend, BOB, "s1", ["bob"])
    assert (await read_turn(backend, half, ALICE, "s1", now=T0, last=50)) == (record, [])


async def test_refusals_are_those_of_active(backend: Backend, half: str) -> None:
    """A missing, foreign or expired session: the same error, message and all, as
    ``SessionManager.active`` gives at the same moment; never another user's messages."""
    seed(backend, ALICE, "s1", ["alice's secret"])
    cases = [
        (BOB, "s1", T0),  # another user's id
        (ALICE_B, "s1", T0),  # the same user id in another tenant
        (ALICE, "nope", T0),
        (ALICE, "s1", T0 + HOUR),  # expired at its expiry
        (ALICE.with_session("s1"), "s1", T0 + 2 * HOUR),
    ]
    for who, sid, now in cases:
        with pytest.raises((SessionNotFound, SessionExpired)) as active:
            await SessionManager(backend, clock=lambda n=now: n).aactive(who, sid)
        with pytest.raises(type(active.value)) as turn:
            await read_turn(backend, half, who, sid, now=now, last=50)
        assert str(turn.value) == str(active.value)
        assert "secret" not in repr(turn.value.__dict__)


async def test_fails_closed_and_checks_its_input(backend: Backend, half: str) -> None:
    seed(backend, ALICE, "s1", ["x"])
    for scope in (None, "tenant_a:alice"):
        with pytest.raises(MissingScope):
            await read_turn(backend, half, scope, "s1", now=T0, last=1)
    with pytest.raises(InvalidIdentifier):
        await read_turn(backend, half, ALICE, "s\x001", now=T0, last=1)
    for last in (-1, 2**63, True, 1.5):
        with pytest.raises(InvalidInput) as refused:
            await read_turn(backend, half, ALICE, "s1", now=T0, last=last)
        assert refused.value.field == "last"


async def test_a_foreign_id_is_audited_as_missing(backend: Backend, half: str) -> None:
    seed(backend, ALICE, "s1", ["x"])
    backend.audit = Auditor.database(backend)
    with pytest.raises(SessionNotFound):
        await read_turn(backend, half, BOB, "s1", now=T0, last=1)
    await read_turn(backend, half, ALICE, "s1", now=T0, last=1)  # her own: no event
    events = [
        (e.operation, e.outcome, e.tenant_id, e.user_id, e.targets)
        for e in read_events(backend, AuditQuery())
    ]
    assert events == [("read_turn", MISSING, "tenant_a", "bob", ("s1",))]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sql_reads_it_in_one_statement(make_backend: Any, kind: str, half: str) -> None:
    """One transaction, and in it one statement on the scoped tables: one snapshot on
    PostgreSQL too, where each statement of a READ COMMITTED transaction sees its own."""
    backend: SQLBackend = make_backend(kind)
    seed(backend, ALICE, "s1", ["a", "b"])
    seen: list[str] = []

    def begin(conn: Any) -> None:
        seen.append("<begin>")

    def statement(conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        seen.append(sql)

    engines = [e for pair in backend._all_engines() for e in (pair[0], pair[1].sync_engine)]
    for engine in engines:
        event.listen(engine, "begin", begin)
        event.listen(engine, "before_cursor_execute", statement)
    found, history = await read_turn(backend, half, ALICE, "s1", now=T0, last=50)
    assert found.id == "s1" and [m.content for m in history] == ["a", "b"]
    tables = [t.name for t in backend.tables.scoped]
    assert seen.count("<begin>") == 1
    assert len([s for s in seen if any(t in s for t in tables)]) == 1


async def test_with_no_now_and_no_last_an_expired_session_and_every_message(
    backend: Backend, half: str
) -> None:
    """What ``GET /v1/sessions/{id}`` reads: no expiry check and no window, the same scope."""
    record = seed(backend, ALICE, "s1", [f"a{i}" for i in range(5)])
    seed(backend, BOB, "s1", ["bob"])  # same id, another user's
    empty = seed(backend, ALICE, "s2", [])
    found, history = await read_turn(backend, half, ALICE, "s1", now=None, last=None)
    assert found == record and [m.content for m in history] == [f"a{i}" for i in range(5)]
    assert await read_turn(backend, half, ALICE, "s2", now=None, last=None) == (empty, [])
    with pytest.raises(SessionExpired):  # with ``now``, the expiry is checked as before
        await read_turn(backend, half, ALICE, "s1", now=T0 + 2 * HOUR, last=None)
    for other in (BOB, ALICE_B):  # Alice's "s2" is nobody else's, expired or not
        with pytest.raises(SessionNotFound):
            await read_turn(backend, half, other, "s2", now=None, last=None)
