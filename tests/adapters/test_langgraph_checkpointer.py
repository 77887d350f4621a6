"""MuxiCheckpointer: LangGraph's conformance suite, and threads that belong to one user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate

from muxi_isolation import (
    Backend,
    MissingScope,
    Scope,
    ScopeViolation,
    SessionExpired,
    SessionManager,
    use_scope,
)
from muxi_isolation.adapters.langgraph import MuxiCheckpointer
from muxi_isolation.stores.graph import CheckpointQuery

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")  # the same user id in another tenant


async def test_langgraph_conformance_suite(backend: Backend) -> None:
    @checkpointer_test(name=f"MuxiCheckpointer[{type(backend).__name__}]")
    async def saver():  # type: ignore[no-untyped-def]
        yield MuxiCheckpointer(backend).for_user(Scope("conformance", str(uuid4())))

    report = await validate(saver)
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert report.conformance_level() == "FULL", failures  # the extended ones too
    every = {"put", "put_writes", "get_tuple", "list", "delete_thread"}
    every |= {"copy_thread", "prune", "delete_for_runs"}
    assert every <= {cap for cap, r in report.results.items() if r.passed}


def config(thread: str, user: Scope | None = None, **extra: str) -> dict:
    configurable = {"thread_id": thread, "checkpoint_ns": "", **extra}
    if user is not None:
        configurable["user_id"] = user.header
    return {"configurable": configurable}


def save(saver: MuxiCheckpointer, user: Scope, thread: str, value: str, parent=None) -> dict:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"secret": value}
    checkpoint["channel_versions"] = {"secret": saver.get_next_version(None, None)}
    cfg = config(thread, user)
    if parent is not None:
        cfg["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    stored = saver.put(cfg, checkpoint, {"source": "input", "step": -1}, {})
    saver.put_writes(stored, [("secret", f"write of {value}")], task_id="t1")
    return stored


def secrets(saver: MuxiCheckpointer, user: Scope, thread: str | None) -> list[str]:
    cfg = None if thread is None else config(thread, user)
    with use_scope(user):
        return [t.checkpoint["channel_values"]["secret"] for t in saver.list(cfg)]


def test_another_users_thread_does_not_exist(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    alices = save(saver, ALICE, "t1", "alice's")
    for other in (BOB, ALICE_B):
        assert saver.get_tuple(config("t1", other)) is None
        assert (
            saver.get_tuple(
                {**alices, "configurable": {**alices["configurable"], "user_id": other.header}}
            )
            is None
        )
        assert secrets(saver, other, "t1") == []
        assert secrets(saver, other, None) == []
        with use_scope(other):
            saver.delete_thread("t1")  # deletes nothing of Alice's
    mine = saver.get_tuple(config("t1", ALICE))
    assert mine is not None and mine.checkpoint["channel_values"] == {"secret": "alice's"}
    assert mine.pending_writes == [("t1", "secret", "write of alice's")]


def test_the_same_thread_id_is_a_different_thread_per_user(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    for user in (ALICE, BOB, ALICE_B):
        first = save(saver, user, "shared", f"{user} 1")
        save(saver, user, "shared", f"{user} 2", parent=first)
    for user in (ALICE, BOB, ALICE_B):
        assert secrets(saver, user, "shared") == [f"{user} 2", f"{user} 1"]
        latest = saver.get_tuple(config("shared", user))
        assert latest is not None and latest.parent_config is not None
    with use_scope(BOB):
        saver.delete_thread("shared")
    assert secrets(saver, BOB, "shared") == []
    assert secrets(saver, ALICE, "shared") == [f"{ALICE} 2", f"{ALICE} 1"]


def test_list_none_lists_only_the_callers_threads(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    save(saver, ALICE, "a1", "a1")
    save(saver, ALICE, "a2", "a2")
    save(saver, BOB, "b1", "b1")
    save(saver, ALICE_B, "a1", "tenant b")
    assert sorted(secrets(saver, ALICE, None)) == ["a1", "a2"]
    assert secrets(saver.for_user(BOB), BOB, None) == ["b1"]
    assert [t.config["configurable"]["thread_id"] for t in saver.for_user(ALICE_B).list(None)] == [
        "a1"
    ]


def test_writing_to_another_users_thread_lands_in_your_own(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    alices = save(saver, ALICE, "t1", "alice's")
    bobs_view = {"configurable": {**alices["configurable"], "user_id": BOB.header}}
    for channel in ("secret", "__error__"):
        saver.put_writes(bobs_view, [(channel, "bob was here")], task_id="t1")
    mine = saver.get_tuple(config("t1", ALICE))
    assert mine is not None and mine.pending_writes == [("t1", "secret", "write of alice's")]
    assert backend.get_checkpoints(BOB, CheckpointQuery("t1")) == []
    assert [s.id for s in backend.list_sessions(BOB)] == ["t1"]  # Bob's own session t1


def test_no_scope_fails_closed(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    save(saver, ALICE, "t1", "x")
    with pytest.raises(MissingScope):
        saver.get_tuple(config("t1"))
    with pytest.raises(MissingScope):
        list(saver.list(None))
    with pytest.raises(MissingScope):
        saver.delete_thread("t1")


def test_conflicting_sources_are_refused(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend).for_user(ALICE)
    with pytest.raises(ScopeViolation):
        saver.get_tuple(config("t1", BOB))
    with use_scope(BOB), pytest.raises(ScopeViolation):
        MuxiCheckpointer(backend).get_tuple(config("t1", ALICE))


def test_a_thread_whose_session_expired_refuses_writes(backend: Backend) -> None:
    now = [datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)]
    sessions = SessionManager(backend, timeout=60, clock=lambda: now[0])
    saver = MuxiCheckpointer(backend, sessions=sessions)
    stored = save(saver, ALICE, "t1", "before")
    assert sessions.get(ALICE, "t1").expires_at == now[0] + timedelta(seconds=60)
    now[0] += timedelta(seconds=59)
    stored = save(saver, ALICE, "t1", "touched", parent=stored)  # each put pushes expiry
    now[0] += timedelta(seconds=61)
    with pytest.raises(SessionExpired):
        save(saver, ALICE, "t1", "after", parent=stored)
    with pytest.raises(SessionExpired):
        saver.put_writes(stored, [("secret", "late")], task_id="t2")
    assert secrets(saver, ALICE, "t1") == ["touched", "before"]  # reading still works
    save(saver, BOB, "t1", "bob's own t1")  # Bob's thread t1 is another session


async def test_async_twins_are_scoped_too(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"secret": "async alice"}
    stored = await saver.aput(config("t1", ALICE), checkpoint, {"source": "input"}, {})
    await saver.aput_writes(stored, [("secret", "w")], task_id="t")
    assert (await saver.aget_tuple(config("t1", BOB))) is None
    assert [t async for t in saver.alist(config("t1", BOB))] == []
    with use_scope(BOB):
        await saver.adelete_thread("t1")
        assert [t async for t in saver.alist(None)] == []
    found = await saver.aget_tuple(config("t1", ALICE))
    assert found is not None and found.pending_writes == [("t", "secret", "w")]
    with use_scope(ALICE):
        await saver.adelete_thread("t1")
    assert (await saver.aget_tuple(config("t1", ALICE))) is None


def test_forget_user_removes_its_threads(backend: Backend) -> None:
    saver = MuxiCheckpointer(backend)
    save(saver, ALICE, "t1", "a")
    save(saver, BOB, "t1", "b")
    counts = backend.forget_user(ALICE)
    assert counts["checkpoints"] == 1 and counts["checkpoint_writes"] == 1
    assert secrets(saver, ALICE, None) == []
    assert secrets(saver, BOB, None) == ["b"]


async def test_create_sessions_false_needs_an_existing_session(backend: Backend) -> None:
    """The one option name of every adapter: without it, a thread must be a session the
    app created; Bob's session of the same id is not Alice's."""
    from muxi_isolation import SessionNotFound

    saver = MuxiCheckpointer(backend, create_sessions=False)
    with pytest.raises(SessionNotFound):
        save(saver, ALICE, "t-new", "x")
    checkpoint = empty_checkpoint()
    with pytest.raises(SessionNotFound):
        await saver.aput(config("t-new", ALICE), checkpoint, {"source": "input", "step": -1}, {})
    SessionManager(backend).create(BOB, "t-new")
    with pytest.raises(SessionNotFound):
        save(saver, ALICE, "t-new", "x")
    SessionManager(backend).create(ALICE, "t-new")
    save(saver, ALICE, "t-new", "mine")
    assert secrets(saver, ALICE, "t-new") == ["mine"]
