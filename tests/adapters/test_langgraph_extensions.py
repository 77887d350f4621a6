"""MuxiCheckpointer's optional extensions (copy_thread, prune, delete_for_runs): each acts on
the caller's own threads, on every backend, through both halves (sync and async)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph

from muxi_isolation import (
    Backend,
    InvalidInput,
    MissingScope,
    Scope,
    SessionExpired,
    SessionManager,
)
from muxi_isolation.adapters.langgraph import MuxiCheckpointer
from muxi_isolation.stores.graph import CheckpointQuery

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
ALICE_B = Scope("tenant_b", "alice")  # the same user id in another tenant
OTHERS = (BOB, ALICE_B)

# How a test calls an extension: the sync method, or its async twin (awaited either way).
Call = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Call:
    async def run(saver: MuxiCheckpointer, name: str, *args: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            return getattr(saver, name)(*args, **kwargs)
        return await getattr(saver, f"a{name}")(*args, **kwargs)

    return run


def put(
    saver: MuxiCheckpointer, thread: str, value: str, *, run: str = "run-1", parent: Any = None
) -> dict[str, Any]:
    """A checkpoint of ``saver``'s user holding ``value``, with one pending write."""
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"secret": value}
    checkpoint["channel_versions"] = {"secret": saver.get_next_version(None, None)}
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if parent is not None:
        configurable["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    stored = saver.put({"configurable": configurable}, checkpoint, {"run_id": run}, {})
    saver.put_writes(stored, [("secret", f"write of {value}")], task_id="t")
    return stored


def chain(saver: MuxiCheckpointer, thread: str, *values: str) -> None:
    parent = None
    for value in values:
        parent = put(saver, thread, value, parent=parent)


def everything(backend: Backend, user: Scope) -> list[tuple[str, bytes, int]]:
    """All of a user's checkpoints (thread, blob, writes), to compare before and after."""
    return sorted(
        (r.thread_id, r.checkpoint, len(r.writes))
        for r in backend.get_checkpoints(user, CheckpointQuery())
    )


def values(saver: MuxiCheckpointer, thread: str) -> list[str]:
    config = {"configurable": {"thread_id": thread}}
    return [t.checkpoint["channel_values"]["secret"] for t in saver.list(config)]


def savers(backend: Backend, sessions: SessionManager | None = None) -> dict[Scope, Any]:
    root = MuxiCheckpointer(backend, sessions=sessions)
    return {user: root.for_user(user) for user in (ALICE, *OTHERS)}


async def test_copy_thread_copies_the_callers_own_thread(backend: Backend, call: Call) -> None:
    mine = savers(backend)
    chain(mine[ALICE], "a1", "one", "two")
    await call(mine[ALICE], "copy_thread", "a1", "a2")
    assert values(mine[ALICE], "a2") == ["two", "one"] == values(mine[ALICE], "a1")
    copied = mine[ALICE].get_tuple({"configurable": {"thread_id": "a2"}})
    assert copied is not None and copied.pending_writes == [("t", "secret", "write of two")]
    assert copied.config["configurable"]["thread_id"] == "a2"
    assert "a2" in [s.id for s in backend.list_sessions(ALICE)]  # the target is a session


async def test_copy_thread_never_reads_another_users_thread(backend: Backend, call: Call) -> None:
    mine = savers(backend)
    chain(mine[ALICE], "a1", "alice's")
    before = everything(backend, ALICE)
    for other in OTHERS:
        await call(mine[other], "copy_thread", "a1", "stolen")  # a1 is missing for them
        assert everything(backend, other) == []
        assert "stolen" not in [s.id for s in backend.list_sessions(other)]
    assert everything(backend, ALICE) == before


async def test_copy_thread_never_writes_into_another_users_thread(
    backend: Backend, call: Call
) -> None:
    mine = savers(backend)
    chain(mine[ALICE], "t1", "alice's")
    before = everything(backend, ALICE)
    for other in OTHERS:
        chain(mine[other], "src", f"{other}'s")
        await call(mine[other], "copy_thread", "src", "t1")  # their own t1, not Alice's
        assert values(mine[other], "t1") == [f"{other}'s"]
    assert everything(backend, ALICE) == before
    assert values(mine[ALICE], "t1") == ["alice's"]


async def test_copy_thread_into_an_expired_thread_copies_nothing(
    backend: Backend, call: Call
) -> None:
    now = [datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)]
    sessions = SessionManager(backend, timeout=60, clock=lambda: now[0])
    mine = savers(backend, sessions)
    chain(mine[ALICE], "old", "stale")
    now[0] += timedelta(seconds=30)
    chain(mine[ALICE], "src", "fresh")
    now[0] += timedelta(seconds=45)  # "old" has expired, "src" has not
    with pytest.raises(SessionExpired):
        await call(mine[ALICE], "copy_thread", "src", "old")
    assert values(mine[ALICE], "old") == ["stale"]


async def test_prune_touches_only_the_callers_threads(backend: Backend, call: Call) -> None:
    mine = savers(backend)
    for user in (ALICE, *OTHERS):
        chain(mine[user], "t1", "1", "2", "3")
    before = {user: everything(backend, user) for user in OTHERS}
    await call(mine[ALICE], "prune", ["t1"], strategy="keep_latest")
    assert values(mine[ALICE], "t1") == ["3"]
    await call(mine[ALICE], "prune", ["t1"], strategy="delete")
    assert values(mine[ALICE], "t1") == []
    assert {user: everything(backend, user) for user in OTHERS} == before


async def test_delete_for_runs_touches_only_the_callers_checkpoints(
    backend: Backend, call: Call
) -> None:
    mine = savers(backend)
    for user in (ALICE, *OTHERS):
        put(mine[user], "t1", "in run 1", run="run-1")
        put(mine[user], "t2", "in run 2", run="run-2")
    before = {user: everything(backend, user) for user in OTHERS}
    await call(mine[ALICE], "delete_for_runs", ["run-1"])
    assert [r.thread_id for r in backend.get_checkpoints(ALICE, CheckpointQuery())] == ["t2"]
    assert {user: everything(backend, user) for user in OTHERS} == before


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("copy_thread", ("t1", "t2")),
        ("prune", (["t1"],)),
        ("delete_for_runs", (["run-1"],)),
    ],
)
async def test_without_a_scope_each_extension_fails_closed(
    backend: Backend, call: Call, name: str, args: tuple[Any, ...]
) -> None:
    chain(MuxiCheckpointer(backend).for_user(ALICE), "t1", "kept")
    before = everything(backend, ALICE)
    with pytest.raises(MissingScope):
        await call(MuxiCheckpointer(backend), name, *args)
    assert everything(backend, ALICE) == before


async def test_prune_refuses_an_unknown_strategy_and_a_lone_id(
    backend: Backend, call: Call
) -> None:
    saver = MuxiCheckpointer(backend).for_user(ALICE)
    chain(saver, "t1", "1", "2")
    with pytest.raises(InvalidInput, match="unknown prune strategy"):
        await call(saver, "prune", ["t1"], strategy="keep_none")
    with pytest.raises(InvalidInput, match="not one string"):
        await call(saver, "prune", "t1")  # would be the threads "t" and "1"
    with pytest.raises(InvalidInput, match="not one string"):
        await call(saver, "delete_for_runs", "r1")
    assert values(saver, "t1") == ["2", "1"]


def extend(state: list[str], batches: Sequence[list[str]]) -> list[str]:
    return [*state, *(note for batch in batches for note in batch)]


@pytest.mark.parametrize("frequency", [100, 1], ids=["pending", "snapshotted"])
async def test_keep_latest_keeps_what_a_delta_channel_is_rebuilt_from(
    backend: Backend, call: Call, frequency: int
) -> None:
    """A DeltaChannel's newest checkpoint holds only the updates since its last snapshot:
    pruning its ancestors would empty it silently, so such a thread is kept whole."""
    channel = DeltaChannel(extend, snapshot_frequency=frequency)
    # the functional form: a class body's annotations are strings here, naming a local
    notes = TypedDict("notes", {"notes": Annotated[list[str], channel]})  # type: ignore[misc]  # noqa: UP013
    graph = StateGraph(notes)
    graph.add_node("note", lambda state: {"notes": [f"seen {len(state['notes'])}"]})
    graph.add_edge(START, "note")
    graph.add_edge("note", END)
    saver = MuxiCheckpointer(backend).for_user(ALICE)
    app = graph.compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t1"}}
    for word in ("a", "b"):
        app.invoke({"notes": [word]}, config)
    before = app.get_state(config).values
    assert before == {"notes": ["a", "seen 1", "b", "seen 3"]}
    await call(saver, "prune", ["t1"])
    assert app.get_state(config).values == before
    kept = len(backend.get_checkpoints(ALICE, CheckpointQuery("t1")))
    assert kept == (1 if frequency == 1 else 6)
