"""create_agent end to end with MuxiCheckpointer, MuxiStore and MuxiAgentMiddleware."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langgraph.store.memory import InMemoryStore

from muxi_isolation import (
    Backend,
    MissingScope,
    Scope,
    ScopeViolation,
    SessionExpired,
    UnsupportedStore,
)
from muxi_isolation.adapters.langgraph import (
    MuxiAgentMiddleware,
    MuxiCheckpointer,
    MuxiContext,
    MuxiStore,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agent.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_example_runs_on_its_sqlite_default(example: ModuleType, tmp_path) -> None:
    replies = await example.main(f"sqlite:///{tmp_path / 'agent.db'}")
    assert replies["tenant_a:alice"][1] == "You told me 1 thing before this. I know: I like Python."
    assert replies["tenant_b:bob"][1] == "You told me 1 thing before this. I know: I live in Lyon."


USERS = {
    "tenant_a:alice": ["I like Python", "I have a cat"],
    "tenant_a:bob": ["I like Rust"],
    "tenant_b:alice": ["I live in Lyon"],  # the same user id in another tenant
    "carol": ["I play chess", "I drink tea", "I run"],
}


async def test_parallel_users_remember_only_their_own(
    example: ModuleType, backend: Backend
) -> None:
    agent, iso = example.build(backend)

    async def talk(user: str, facts: list[str]) -> tuple[str, str, str]:
        session = await iso.sessions.acreate(iso.scope(user))
        for fact in facts:
            await example.chat(agent, user, session.id, f"remember {fact}")
        answer = await example.chat(agent, user, session.id, "what do you know?")
        return user, session.id, answer

    done = await asyncio.gather(*(talk(u, f) for u, f in USERS.items() for _ in range(2)))
    for user, session_id, answer in done:
        facts = USERS[user]
        assert answer.startswith(f"You told me {example.plural(len(facts), 'thing')} before")
        known = set(answer.split("I know: ", 1)[1].rstrip(".").split(", "))
        assert known <= set(facts) and known, (user, answer)  # only this user's facts
        state = await agent.aget_state({"configurable": {"thread_id": session_id, "user_id": user}})
        said = [m.text for m in state.values["messages"] if isinstance(m, HumanMessage)]
        assert said == [f"remember {f}" for f in facts] + ["what do you know?"]
    for user, facts in USERS.items():
        stored = MuxiStore(backend).for_user(Scope.parse(user)).search(("memories",), limit=50)
        assert sorted(i.value["text"] for i in stored) == sorted(facts * 2)
    alices_thread = next(s for u, s, _ in done if u == "tenant_a:alice")
    bobs = {"configurable": {"thread_id": alices_thread, "user_id": "tenant_a:bob"}}
    assert (await agent.aget_state(bobs)).values == {}  # another user's thread: nothing


def test_sync_invoke_and_refusals(example: ModuleType, backend: Backend) -> None:
    agent, iso = example.build(backend)
    sid = iso.sessions.create(iso.scope("tenant_a:alice")).id
    ctx = MuxiContext(user_id="tenant_a:alice", session_id=sid)
    config = {"configurable": {"thread_id": sid}}
    agent.invoke({"messages": [HumanMessage("remember I like Go")]}, config, context=ctx)
    out = agent.invoke({"messages": [HumanMessage("what do you know?")]}, config, context=ctx)
    assert out["messages"][-1].text.endswith("I know: I like Go.")
    state = agent.get_state({**config, "context": ctx})  # the context it was invoked with
    assert state.values["messages"][-1].text == out["messages"][-1].text
    with pytest.raises(MissingScope):
        agent.invoke({"messages": [HumanMessage("hi")]}, config)
    with pytest.raises(ScopeViolation):
        agent.invoke(
            {"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "x"}}, context=ctx
        )
    bob = MuxiContext(user_id="tenant_a:bob", session_id=sid)
    out = agent.invoke({"messages": [HumanMessage("what do you know?")]}, config, context=bob)
    assert out["messages"][-1].text == (
        "You told me 0 things before this. I know: nothing about you yet."
    )


def test_the_middleware_refuses_a_store_it_cannot_scope(
    example: ModuleType, backend: Backend
) -> None:
    agent = create_agent(
        example.ScriptedModel(),
        [example.save_fact],
        checkpointer=MuxiCheckpointer(backend),
        store=InMemoryStore(),
        middleware=[MuxiAgentMiddleware()],
        context_schema=MuxiContext,
    )
    ctx = MuxiContext(user_id="a", session_id="s1")
    with pytest.raises(UnsupportedStore):
        agent.invoke(
            {"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "s1"}}, context=ctx
        )


async def test_an_expired_session_stops_the_agent(example: ModuleType, backend: Backend) -> None:
    now = [datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)]
    agent, iso = example.build(backend, session_timeout=60)
    iso.sessions.clock = lambda: now[0]
    session = await iso.sessions.acreate(iso.scope("tenant_a:alice"))
    await example.chat(agent, "tenant_a:alice", session.id, "remember I like Python")
    now[0] += timedelta(minutes=5)
    with pytest.raises(SessionExpired):
        await example.chat(agent, "tenant_a:alice", session.id, "what do you know?")
    state = await agent.aget_state(
        {"configurable": {"thread_id": session.id, "user_id": "tenant_a:alice"}}
    )
    assert len(state.values["messages"]) == 4  # the history stays readable
    fresh = await iso.sessions.acreate(iso.scope("tenant_a:alice"))
    answer = await example.chat(agent, "tenant_a:alice", fresh.id, "what do you know?")
    assert answer.endswith("I know: I like Python.")  # memory persists past the session
