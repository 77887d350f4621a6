"""A compiled graph's get_state / get_state_history (their async twins, and update_state)
take the runtime context the graph was invoked with, as ``config["context"]``: they act on
that user's thread and nobody else's, on every backend."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from muxi_isolation import Backend, MissingScope, ScopeViolation
from muxi_isolation.adapters.langgraph import MuxiCheckpointer, MuxiContext

ALICE, BOB, ALICE_B = "tenant_a:alice", "tenant_a:bob", "tenant_b:alice"


class State(TypedDict):
    said: Annotated[list[str], operator.add]


def build(backend: Backend) -> Any:
    graph = StateGraph(State, context_schema=MuxiContext)
    graph.add_node("echo", lambda state: {"said": [f"echo {state['said'][-1]}"]})
    graph.add_edge(START, "echo")
    graph.add_edge("echo", END)
    return graph.compile(checkpointer=MuxiCheckpointer(backend))


def config(session: str, user: str, **more: Any) -> dict[str, Any]:
    """What a caller passes: the thread, and the same context it invoked with."""
    return {"configurable": {"thread_id": session}, "context": MuxiContext(user, session), **more}


# The state as the sync methods or their async twins give it: (latest, history).
Read = Callable[[Any, dict[str, Any]], Awaitable[tuple[Any, list[Any]]]]


@pytest.fixture(params=["sync", "async"])
def read(request: pytest.FixtureRequest) -> Read:
    async def run(graph: Any, cfg: dict[str, Any]) -> tuple[Any, list[Any]]:
        if request.param == "sync":
            return graph.get_state(cfg), list(graph.get_state_history(cfg))
        history = [s async for s in graph.aget_state_history(cfg)]
        return await graph.aget_state(cfg), history

    return run


async def test_get_state_takes_the_context_it_was_invoked_with(
    backend: Backend, read: Read
) -> None:
    graph = build(backend)
    ctx = MuxiContext(ALICE, "s1")
    await graph.ainvoke({"said": ["hi"]}, {"configurable": {"thread_id": "s1"}}, context=ctx)
    graph.invoke({"said": ["again"]}, {"configurable": {"thread_id": "s1"}}, context=ctx)
    latest, history = await read(graph, config("s1", ALICE))
    assert latest.values == {"said": ["hi", "echo hi", "again", "echo again"]}
    assert len(history) >= 4 and history[0].values == latest.values
    as_dict = {"configurable": {"thread_id": "s1"}, "context": {"user_id": ALICE}}
    assert (await read(graph, as_dict))[0].values == latest.values  # a dict context too
    graph.update_state(config("s1", ALICE), {"said": ["edited"]})  # no context= there either
    assert (await read(graph, config("s1", ALICE)))[0].values["said"][-1] == "edited"


async def test_another_users_context_reads_nothing_of_hers(backend: Backend, read: Read) -> None:
    graph = build(backend)
    ctx = MuxiContext(ALICE, "s1")
    graph.invoke({"said": ["secret"]}, {"configurable": {"thread_id": "s1"}}, context=ctx)
    for other in (BOB, ALICE_B):
        latest, history = await read(graph, config("s1", other))
        assert latest.values == {} and history == []


async def test_without_a_user_or_with_two_get_state_refuses(backend: Backend, read: Read) -> None:
    graph = build(backend)
    ctx = MuxiContext(ALICE, "s1")
    graph.invoke({"said": ["x"]}, {"configurable": {"thread_id": "s1"}}, context=ctx)
    with pytest.raises(MissingScope):
        await read(graph, {"configurable": {"thread_id": "s1"}})
    with pytest.raises(ScopeViolation):  # the context names another session than the thread
        await read(
            graph, {"configurable": {"thread_id": "s1"}, "context": MuxiContext(ALICE, "s2")}
        )
    two = config("s1", ALICE)
    two["configurable"]["user_id"] = BOB  # two sources, two users
    with pytest.raises(ScopeViolation):
        await read(graph, two)
