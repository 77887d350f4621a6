"""Policy decisions that mutation testing (bench/mutation.py) found unchecked.

Each test kills mutants of ``muxi_isolation/policy.py`` that ``tests/test_policy.py`` let
through: the delete filter's "matches everything" refusal, the per-user id namespace of
foreign stores, session records stamped at user level, and input refused before a write.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

import pytest

from muxi_isolation import (
    InvalidFilter,
    InvalidInput,
    Memory,
    Message,
    MissingScope,
    ReservedKey,
    Scope,
    ScopeViolation,
    policy,
)
from muxi_isolation.filters import Compare, Not, Or
from muxi_isolation.records import Receipt, SessionRecord

ALICE = Scope("t", "alice", "s1")
BOB = Scope("t", "bob", "s1")
NONE_OF: dict[str, Any] = {"a": {"$in": []}}  # false for every record
ALL_OF: dict[str, Any] = {"$not": NONE_OF}  # true for every record

# (filter, whether a delete must refuse it because it selects every record)
DELETE_FILTERS: list[tuple[dict[str, Any] | None, bool]] = [
    (None, True),
    ({}, True),
    ({"a": 1}, False),
    (NONE_OF, False),  # selects nothing: harmless
    ({"a": {"$any": []}}, False),
    ({"a": {"$nin": []}}, False),  # only an empty $in / $any is seen as constant
    (ALL_OF, True),
    ({"$not": {"a": {"$any": []}}}, True),
    ({"$not": {"a": {"$in": [1]}}}, False),
    ({"$not": {"a": {"$nin": []}}}, False),
    ({"$or": [{"a": 1}, {"$not": {"a": 1}}]}, True),  # X or not X
    ({"$or": [{"$not": {"a": 1}}, {"a": 1}]}, True),
    ({"$or": [{"a": {"$exists": True}}, {"a": {"$exists": False}}]}, True),
    ({"$or": [{"a": {"$exists": True}}, {"a": {"$exists": True}}]}, False),
    ({"$or": [{"a": 1}, {"a": {"$exists": False}}]}, False),  # a == 1 is no $exists test
    ({"$or": [{"a": 1}, {"$not": {"b": 1}}]}, False),
    ({"$or": [{"a": 1}, {"b": 1}]}, False),
    ({"$or": [ALL_OF, {"b": 1}]}, True),  # one branch true for all
    ({"$or": [{"b": 1}, ALL_OF]}, True),
    ({"$and": [ALL_OF, {"$not": {"b": {"$in": []}}}]}, True),  # every branch true
    ({"$and": [ALL_OF, {"b": 1}]}, False),
    ({"$and": [{"b": 1}, ALL_OF]}, False),
    ({"$and": [{"a": 1}, {"$not": {"a": 1}}]}, False),  # X and not X selects nothing
    ({"$not": {"$and": [{"a": 1}, {"$not": {"a": 1}}]}}, True),  # not (X and not X)
    ({"$not": {"$and": [{"a": 1}, {"b": 1}]}}, False),
    ({"$not": {"$and": [NONE_OF, {"b": 1}]}}, True),  # not (false and Y)
    ({"$not": {"$and": [{"b": 1}, NONE_OF]}}, True),
    ({"$not": {"$or": [NONE_OF, {"b": {"$in": []}}]}}, True),  # not (false or false)
    ({"$not": {"$or": [NONE_OF, {"b": 1}]}}, False),
    ({"$not": {"$or": [{"a": 1}, {"$not": {"a": 1}}]}}, False),  # not (X or not X): none
]


@pytest.mark.parametrize(("spec", "refused"), DELETE_FILTERS)
def test_delete_filter_refuses_only_what_selects_everything(
    spec: dict[str, Any] | None, refused: bool
) -> None:
    # a delete filter true for every record would wipe all the user has: refused; any other
    # filter goes through unchanged
    if refused:
        with pytest.raises(InvalidFilter, match="matches everything"):
            policy.delete_filter(spec)
    else:
        assert policy.delete_filter(spec) == policy.read_filter(spec)


def test_delete_filter_on_hand_built_trees() -> None:
    x = Compare("a", "$eq", 1)
    with pytest.raises(InvalidFilter):
        policy.delete_filter(Or((x, Not(x))))
    assert policy.delete_filter(Or((x, Not(Compare("a", "$eq", 2))))) is not None
    with pytest.raises(ReservedKey):
        policy.delete_filter({"user_id": "bob"})


def test_foreign_id_namespace_is_per_tenant_and_user() -> None:
    digest = hashlib.sha256(b"t\0alice").hexdigest()[:32]
    assert policy.foreign_id_prefix(ALICE) == f"muxi:{digest}:"
    assert policy.foreign_id_prefix(ALICE.user()) == policy.foreign_id_prefix(ALICE)
    prefixes = {policy.foreign_id_prefix(s) for s in (ALICE, BOB, Scope("t2", "alice"))}
    assert len(prefixes) == 3
    stored = policy.foreign_id(ALICE, "doc-1")
    assert stored == policy.foreign_id_prefix(ALICE) + "doc-1"
    assert policy.caller_id(ALICE, stored) == "doc-1"
    assert policy.caller_id(ALICE.with_session("s9"), stored) == "doc-1"
    # another user's stored id, and an id from outside any namespace, are not ours
    assert policy.caller_id(BOB, stored) is None
    assert policy.caller_id(Scope("t2", "alice"), stored) is None
    assert policy.caller_id(ALICE, "doc-1") is None
    assert policy.caller_id(ALICE, policy.foreign_id(ALICE, "")) == ""


def test_require_scope_takes_a_user_scope_unless_a_session_is_needed() -> None:
    assert policy.require_scope(ALICE.user()) is ALICE.user()
    with pytest.raises(MissingScope, match="got NoneType"):
        policy.require_scope(None)
    with pytest.raises(MissingScope, match="got str"):
        policy.require_scope("t:alice")


def test_session_record_is_stamped_at_user_level() -> None:
    now = datetime.now(timezone.utc)
    unstamped = SessionRecord("s", None, now, now, now)  # type: ignore[arg-type]
    assert policy.stamp(ALICE, unstamped).scope == ALICE.user()
    in_session = SessionRecord("s", ALICE, now, now, now)
    assert policy.stamp(ALICE, in_session).scope == ALICE.user()


def test_receipt_is_stamped_at_user_level_and_checked() -> None:
    # a receipt answers retries of one user's requests, from any of her sessions
    for stamped in (None, ALICE):
        receipt = Receipt("k1", "digest", {"ok": 1}, scope=stamped)
        assert policy.stamp(ALICE, receipt) == Receipt(
            "k1", "digest", {"ok": 1}, scope=ALICE.user()
        )
    with pytest.raises(ScopeViolation):
        policy.stamp(ALICE, Receipt("k1", "digest", {}, scope=BOB))
    with pytest.raises(InvalidInput) as caught:
        policy.stamp(ALICE, Receipt("k1", "digest", {"x": float("nan")}))
    assert caught.value.field == "receipt"


@pytest.mark.parametrize(
    ("record", "what"),
    [
        (Message("user", float("nan")), "message content"),  # type: ignore[arg-type]
        (Message("user", "x", {"a": float("inf")}), "message content"),
        (Memory("m", "x", {"a": float("nan")}), "memory metadata"),
        (Memory("m", "x", {"a": "nul\0"}), "memory metadata"),
    ],
)
def test_stamp_refuses_what_no_backend_stores(record: Message | Memory, what: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        policy.stamp(ALICE, record)
    assert caught.value.field == what


def test_check_json_passes_value_and_field_through() -> None:
    policy.check_json({"a": [1, "x"]}, "thing")
    with pytest.raises(InvalidInput) as caught:
        policy.check_json({"a": float("nan")}, "thing")
    assert caught.value.field == "thing"


def test_errors_say_what_was_refused() -> None:
    with pytest.raises(ScopeViolation, match="another user"):
        policy.owner(ALICE, BOB)
    with pytest.raises(ReservedKey, match="muxi_user_id"):
        policy.check_metadata({"muxi_user_id": "bob"})
    with pytest.raises(ReservedKey, match="user_id"):
        policy.read_filter({"user_id": "bob"})
    with pytest.raises(InvalidFilter, match="not int"):
        policy.read_filter(7)  # type: ignore[arg-type]


def test_verify_logs_the_reader_scope(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="muxi_isolation.policy"):
        assert policy.verify(ALICE, [Memory("m", "x", scope=BOB)]) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"dropped a record from outside {ALICE} returned by storage"
    ]
