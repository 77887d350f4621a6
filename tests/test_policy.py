from __future__ import annotations

import logging

import pytest

from muxi_isolation import Memory, Message, MissingScope, ReservedKey, Scope, ScopeViolation, policy
from muxi_isolation.filters import Compare
from muxi_isolation.records import SessionRecord

ALICE = Scope("t", "alice", "s1")
BOB = Scope("t", "bob", "s1")


def test_require_scope_fails_closed() -> None:
    for bad in (None, "t:alice", object()):
        with pytest.raises(MissingScope):
            policy.require_scope(bad)
    with pytest.raises(MissingScope, match="session"):
        policy.require_scope(ALICE.user(), session=True)
    assert policy.require_scope(ALICE, session=True) is ALICE


def test_stamp_sets_the_scope() -> None:
    assert policy.stamp(ALICE, Message("user", "x")).scope == ALICE
    assert policy.stamp(ALICE, Memory("m", "x")).scope == ALICE
    assert policy.stamp(ALICE.user(), Memory("m", "x")).scope == ALICE.user()
    # a record already stamped for the same user may be re-stamped (e.g. moved session)
    assert policy.stamp(ALICE, Message("user", "x", scope=ALICE.with_session("s0"))).scope == ALICE


def test_stamp_refuses_foreign_records_and_reserved_keys() -> None:
    with pytest.raises(ScopeViolation):
        policy.stamp(ALICE, Memory("m", "x", scope=BOB))
    with pytest.raises(ReservedKey):
        policy.stamp(ALICE, Memory("m", "x", {"muxi_user_id": "alice"}))
    with pytest.raises(MissingScope):
        policy.stamp(ALICE.user(), Message("user", "x"))


def test_read_filter_refuses_scope_keys() -> None:
    assert policy.read_filter(None) is None
    assert policy.read_filter({"a": 1}) == Compare("a", "$eq", 1)
    assert policy.read_filter(Compare("a", "$eq", 1)) == Compare("a", "$eq", 1)
    for key in ("user_id", "tenant_id", "session_id", "muxi_user_id", "muxi_tenant_id"):
        with pytest.raises(ReservedKey):
            policy.read_filter({"$or": [{"a": 1}, {key: "x"}]})
    with pytest.raises(ReservedKey):
        policy.read_filter(Compare("muxi_session_id", "$ne", "x"))


def test_verify_drops_and_reports_foreign(caplog: pytest.LogCaptureFixture) -> None:
    mine = Message("user", "mine", scope=ALICE)
    other_session = Message("user", "s2", scope=ALICE.with_session("s2"))
    theirs = Message("user", "theirs", scope=BOB)
    unstamped = Message("user", "?")
    with caplog.at_level(logging.ERROR, logger="muxi_isolation.policy"):
        assert policy.verify(ALICE, [mine, other_session, theirs, unstamped]) == [mine]
    assert len(caplog.records) == 3
    mem_same_user = Memory("m", "x", scope=ALICE.with_session("s9"))
    assert policy.verify(ALICE, [mem_same_user, Memory("b", "x", scope=BOB)]) == [mem_same_user]
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    rec = SessionRecord("s", ALICE.user(), now, now, now)
    assert policy.verify(BOB, [rec]) == []
    assert policy.stamp(ALICE, rec).scope == ALICE.user()


def test_foreign_store_metadata() -> None:
    stamped = policy.stamp_metadata(ALICE, {"a": 1})
    assert stamped == {
        "a": 1,
        "muxi_tenant_id": "t",
        "muxi_user_id": "alice",
        "muxi_session_id": "s1",
    }
    assert policy.scope_metadata(ALICE.user()) == {"muxi_tenant_id": "t", "muxi_user_id": "alice"}
    assert policy.verify_metadata(ALICE, stamped)
    assert policy.verify_metadata(ALICE.with_session("other"), stamped)  # user level
    assert not policy.verify_metadata(BOB, stamped)
    assert not policy.verify_metadata(ALICE, None)
    assert not policy.verify_metadata(Scope("t2", "alice"), stamped)
    with pytest.raises(ReservedKey):
        policy.stamp_metadata(ALICE, {"muxi_tenant_id": "t"})
    with pytest.raises(MissingScope):
        policy.stamp_metadata(None, {})  # type: ignore[arg-type]
