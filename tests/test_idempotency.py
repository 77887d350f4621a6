"""Idempotent writes: a retry with the same key gets the first answer and writes nothing,
on every backend and both halves; the receipt is stored with the writes or not at all."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from muxi_isolation import (
    Backend,
    DuplicateRequest,
    KeyReused,
    Message,
    Receipt,
    Scope,
    SessionExists,
    SessionManager,
    SessionRecord,
)
from muxi_isolation.stores.base import RECEIPT_WINDOW

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
NOW = datetime.now(timezone.utc)
LATER = NOW + timedelta(hours=1)


def session(backend: Backend, who: Scope, sid: str = "s1") -> Scope:
    backend.insert_session(who, SessionRecord(sid, who, NOW, NOW, LATER))
    return who.with_session(sid)


def test_a_stored_key_refuses_the_whole_append(backend: Backend) -> None:
    s = session(backend, ALICE)
    first = Receipt("k1", "req", {"answer": 1})
    stored = backend.append_to_session(
        s, [Message("user", "hi")], now=NOW, expires_at=LATER, receipt=first
    )
    with pytest.raises(DuplicateRequest):
        backend.append_to_session(
            s, [Message("user", "hi")], now=NOW, expires_at=LATER, receipt=first
        )
    with pytest.raises(DuplicateRequest):
        asyncio.run(
            backend.aappend_to_session(
                s, [Message("user", "hi")], now=NOW, expires_at=LATER, receipt=first
            )
        )
    assert [m.content for m in backend.get_messages(s)] == ["hi"]
    kept = backend.get_receipt(ALICE, "k1")
    assert kept is not None and kept.response == {"answer": 1}
    assert kept.seqs == tuple(m.seq for m in stored)
    assert asyncio.run(backend.aget_receipt(ALICE, "k1")) == kept


def test_keys_are_per_user(backend: Backend) -> None:
    a, b = session(backend, ALICE), session(backend, BOB)
    receipt = Receipt("same", "req", {"who": "x"})
    backend.append_to_session(a, [Message("user", "a")], now=NOW, expires_at=LATER, receipt=receipt)
    assert backend.get_receipt(BOB, "same") is None
    backend.append_to_session(b, [Message("user", "b")], now=NOW, expires_at=LATER, receipt=receipt)
    assert [m.content for m in backend.get_messages(b)] == ["b"]
    kept = backend.get_receipt(ALICE, "same")
    assert kept is not None and kept.scope is not None and kept.scope.same_user(ALICE)


def test_a_new_session_and_its_turn_are_one_transaction(backend: Backend) -> None:
    s = ALICE.with_session("new")
    record = SessionRecord("new", ALICE, NOW, NOW, LATER)
    receipt = Receipt("k", "req", {})
    backend.append_to_session(
        s, [Message("user", "one")], now=NOW, expires_at=LATER, create=record, receipt=receipt
    )
    again = SessionRecord("new", ALICE, NOW, NOW, LATER)
    with pytest.raises(SessionExists):  # the session is there: nothing else is written
        backend.append_to_session(
            s, [Message("user", "two")], now=NOW, expires_at=LATER, create=again
        )
    other = ALICE.with_session("other")
    record = SessionRecord("other", ALICE, NOW, NOW, LATER)
    with pytest.raises(DuplicateRequest):  # the key is stored: no session, no message
        backend.append_to_session(
            other,
            [Message("user", "x")],
            now=NOW,
            expires_at=LATER,
            create=record,
            receipt=receipt,
        )
    assert [r.id for r in backend.list_sessions(ALICE)] == ["new"]
    assert [m.content for m in backend.get_messages(s)] == ["one"]


def test_a_session_made_with_a_stored_key_is_not_made(backend: Backend) -> None:
    receipt = Receipt("k", "req", {"id": "s1"})
    backend.insert_session(ALICE, SessionRecord("s1", ALICE, NOW, NOW, LATER), receipt=receipt)
    with pytest.raises(DuplicateRequest):
        backend.insert_session(ALICE, SessionRecord("s2", ALICE, NOW, NOW, LATER), receipt=receipt)
    with pytest.raises(DuplicateRequest):
        asyncio.run(
            backend.ainsert_session(
                ALICE, SessionRecord("s3", ALICE, NOW, NOW, LATER), receipt=receipt
            )
        )
    assert [r.id for r in backend.list_sessions(ALICE)] == ["s1"]


def test_a_receipt_past_its_window_no_longer_replays(backend: Backend) -> None:
    old = Receipt("k", "req", {"v": 1}, created_at=NOW - RECEIPT_WINDOW - timedelta(minutes=1))
    backend.insert_session(ALICE, SessionRecord("s1", ALICE, NOW, NOW, LATER), receipt=old)
    assert backend.get_receipt(ALICE, "k") is None
    backend.insert_session(
        ALICE, SessionRecord("s2", ALICE, NOW, NOW, LATER), receipt=replace(old, created_at=None)
    )
    kept = backend.get_receipt(ALICE, "k")
    assert kept is not None and kept.response == {"v": 1}


def test_forgetting_a_user_forgets_her_receipts(backend: Backend) -> None:
    s = session(backend, ALICE)
    receipt = Receipt("k", "req", {"text": "secret"})
    backend.append_to_session(s, [Message("user", "x")], now=NOW, expires_at=LATER, receipt=receipt)
    counts = backend.forget_user(ALICE)
    assert counts.get("receipts") == 1
    assert backend.get_receipt(ALICE, "k") is None


def test_an_append_retried_with_its_key_is_stored_once(backend: Backend) -> None:
    sessions = SessionManager(backend)
    s = session(backend, ALICE)
    turn = [Message("user", "hello"), Message("assistant", "hi")]
    first = sessions.append(s, turn, idempotency_key="t1")
    again = sessions.append(s, turn, idempotency_key="t1")
    async_again = asyncio.run(sessions.aappend(s, turn, idempotency_key="t1"))
    assert [m.seq for m in again] == [m.seq for m in first] == [m.seq for m in async_again]
    assert [m.content for m in backend.get_messages(s)] == ["hello", "hi"]
    with pytest.raises(KeyReused):
        sessions.append(s, [Message("user", "something else")], idempotency_key="t1")
    with pytest.raises(KeyReused):
        asyncio.run(sessions.aappend(s, [Message("user", "else")], idempotency_key="t1"))
    assert len(backend.get_messages(s)) == 2


def test_the_same_key_in_another_session_is_another_request(backend: Backend) -> None:
    sessions = SessionManager(backend)
    s1, s2 = session(backend, ALICE, "s1"), session(backend, ALICE, "s2")
    sessions.append(s1, [Message("user", "x")], idempotency_key="t1")
    with pytest.raises(KeyReused):
        sessions.append(s2, [Message("user", "x")], idempotency_key="t1")
    assert backend.get_messages(s2) == []


def test_two_threads_with_one_key_store_once(backend: Backend) -> None:
    sessions = SessionManager(backend)
    s = session(backend, ALICE)
    turn = [Message("user", "once")]
    results: list[list[Message]] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def send() -> None:
        gate.wait()
        try:
            results.append(sessions.append(s, turn, idempotency_key="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert [m.content for m in backend.get_messages(s)] == ["once"]
    assert {tuple(m.seq for m in r) for r in results} == {(1,)}
