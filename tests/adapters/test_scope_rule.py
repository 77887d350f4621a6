"""The one scope rule (``context.resolve``), in every adapter, on both halves.

Every source a call has (a bound scope, ``use_scope``, a RunnableConfig's configurable
``user_id``, LangGraph's runtime context, the session the call names) must name one user
and one session: ``ScopeViolation`` otherwise, ``MissingScope`` when there is none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from llama_index.core.vector_stores import SimpleVectorStore, VectorStoreQuery

from muxi_isolation import Backend, MissingScope, Scope, ScopeViolation, use_scope
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import langgraph as lg
from muxi_isolation.adapters import llamaindex as li

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
ALICE_B = Scope.parse("tenant_b:alice")  # same user id, another tenant: another user
EMBED = lc.HashingEmbeddings(64)
QUERY = VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=1)


def config(scope: Scope, **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"user_id": scope.header, **configurable}}


@dataclass(frozen=True)
class Case:
    """An adapter object acting for ``scope`` (``None``: unbound), and one call each half."""

    name: str
    make: Callable[[Backend, Scope | None], Any]
    call: Callable[[Any], object]
    acall: Callable[[Any], Awaitable[object]]
    unbound: bool = True  # False: always bound (a foreign store's wrapper)


def _lc_history(backend: Backend, scope: Scope | None) -> Callable[[], Any]:
    # The factory's "binding" is the user_id the chain passes it.
    factory = lc.MuxiHistoryFactory(backend)
    return lambda: factory("s1", None if scope is None else scope.header)


async def _lc_history_async(make: Callable[[], Any]) -> object:
    return await make().aget_messages()


def _for_user(made: Any, scope: Scope | None) -> Any:
    return made if scope is None else made.for_user(scope)


CASES = [
    Case(
        "langchain vector store",
        lambda b, s: lc.MuxiVectorStore(b, EMBED, scope=s),
        lambda o: o.similarity_search("bees"),
        lambda o: o.asimilarity_search("bees"),
    ),
    Case(
        "langchain retriever",
        lambda b, s: lc.MuxiVectorStore(b, EMBED, scope=s).as_retriever(),
        lambda o: o.invoke("bees"),
        lambda o: o.ainvoke("bees"),
    ),
    Case(
        "langchain scoped vector store",
        lambda b, s: lc.scope_vectorstore(InMemoryVectorStore(EMBED), s),
        lambda o: o.similarity_search("bees"),
        lambda o: o.aget_by_ids(["1"]),
        unbound=False,
    ),
    Case(
        "langchain scoped retriever",
        lambda b, s: lc.scope_vectorstore(InMemoryVectorStore(EMBED), s).as_retriever(),
        lambda o: o.invoke("bees"),
        lambda o: o.ainvoke("bees"),
        unbound=False,
    ),
    Case("langchain history", _lc_history, lambda o: o().messages, _lc_history_async),
    Case(
        "llamaindex chat store",
        lambda b, s: li.MuxiChatStore(b, s),
        lambda o: o.get_messages("s1"),
        lambda o: o.aget_messages("s1"),
    ),
    Case(
        "llamaindex db chat store",
        lambda b, s: li.MuxiDBChatStore(b, s),
        lambda o: o.count_messages("s1"),  # async only, as AsyncDBChatStore is
        lambda o: o.count_messages("s1"),
    ),
    Case(
        "llamaindex vector store",
        lambda b, s: li.MuxiVectorStore(b, s),
        lambda o: o.get_nodes(node_ids=["n1"]),
        lambda o: o.aget_nodes(node_ids=["n1"]),
    ),
    Case(
        "llamaindex scoped vector store",
        lambda b, s: li.ScopedVectorStore(SimpleVectorStore(), s),
        lambda o: o.query(QUERY),
        lambda o: o.aquery(QUERY),
    ),
    Case(
        "langgraph checkpointer",
        lambda b, s: _for_user(lg.MuxiCheckpointer(b), s),
        lambda o: o.get_tuple({"configurable": {"thread_id": "s1"}}),
        lambda o: o.aget_tuple({"configurable": {"thread_id": "s1"}}),
    ),
    Case(
        "langgraph store",
        lambda b, s: _for_user(lg.MuxiStore(b), s),
        lambda o: o.get(("notes",), "k"),
        lambda o: o.aget(("notes",), "k"),
    ),
]


async def _run(call: Callable[[Any], object], made: Any) -> None:
    """One call; an async-only adapter's "sync" call returns an awaitable."""
    result = call(made)
    if isinstance(result, Awaitable):
        await result


async def _both(case: Case, made: Any) -> None:
    await _run(case.call, made)
    await _run(case.acall, made)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_every_source_must_name_one_user(backend: Backend, case: Case) -> None:
    for half in (case.call, case.acall):
        with pytest.raises(MissingScope):  # no source: never a default user
            await _run(half, case.make(backend, None))
    with use_scope(ALICE):  # two sources, one user
        await _both(case, case.make(backend, ALICE))
        if case.unbound:
            await _both(case, case.make(backend, None))
    for other in (BOB, ALICE_B):  # a bound scope never silently wins
        for half in (case.call, case.acall):
            with use_scope(other), pytest.raises(ScopeViolation):
                await _run(half, case.make(backend, ALICE))


# -- sessions: one call acts in one session -------------------------------------------------

SESSION_CASES = [c for c in CASES if c.name in {
    "langchain history", "llamaindex chat store", "llamaindex db chat store",
    "langgraph checkpointer",
}]  # fmt: skip


@pytest.mark.parametrize("case", SESSION_CASES, ids=lambda c: c.name)
async def test_a_call_in_another_session_than_use_scope_names_is_refused(
    backend: Backend, case: Case
) -> None:
    """Each of these calls names session "s1" (a history's session_id, a chat store key,
    a thread id); ``use_scope`` naming another session of the same user is a conflict."""
    with use_scope(ALICE.with_session("s1")):
        await _both(case, case.make(backend, ALICE))
    for half in (case.call, case.acall):
        with use_scope(ALICE.with_session("s2")), pytest.raises(ScopeViolation):
            await _run(half, case.make(backend, ALICE))


# -- LangChain: the RunnableConfig is a source ----------------------------------------------


def _two_users(backend: Backend) -> None:
    lc.MuxiVectorStore(backend, EMBED, scope=ALICE).add_texts(["Alice keeps bees."], ids=["1"])
    lc.MuxiVectorStore(backend, EMBED, scope=BOB).add_texts(["Bob plays chess."], ids=["1"])


def _texts(batches: list[list[Any]]) -> list[list[str]]:
    return [[d.page_content for d in docs] for docs in batches]


def test_one_unbound_retriever_serves_each_user_of_a_batch(backend: Backend) -> None:
    _two_users(backend)
    retriever = lc.MuxiVectorStore(backend, EMBED).as_retriever(k=4)
    found = retriever.batch(
        ["bees", "bees", "bees"], config=[config(ALICE), config(BOB), config(ALICE_B)]
    )
    assert _texts(found) == [["Alice keeps bees."], ["Bob plays chess."], []]


async def test_one_unbound_retriever_serves_each_user_of_a_batch_async(backend: Backend) -> None:
    _two_users(backend)
    retriever = lc.MuxiVectorStore(backend, EMBED).as_retriever(k=4)
    found = await retriever.abatch(["bees", "bees"], config=[config(ALICE), config(BOB)])
    assert _texts(found) == [["Alice keeps bees."], ["Bob plays chess."]]


async def test_a_bound_retriever_invoked_for_another_user_is_refused(backend: Backend) -> None:
    _two_users(backend)
    retriever = lc.MuxiVectorStore(backend, EMBED, scope=ALICE).as_retriever()
    assert _texts([retriever.invoke("bees", config(ALICE))]) == [["Alice keeps bees."]]
    with pytest.raises(ScopeViolation):
        retriever.invoke("bees", config(BOB))
    with pytest.raises(ScopeViolation):
        await retriever.ainvoke("bees", config(BOB))
    with pytest.raises(ScopeViolation):
        retriever.batch(["bees"], config=[config(ALICE_B)])
    foreign = lc.scope_vectorstore(InMemoryVectorStore(EMBED), ALICE).as_retriever()
    foreign.invoke("bees", config(ALICE))
    with pytest.raises(ScopeViolation):
        foreign.invoke("bees", config(BOB))
    with pytest.raises(ScopeViolation):
        await foreign.ainvoke("bees", config(BOB))
    unbound = lc.MuxiVectorStore(backend, EMBED).as_retriever()
    with pytest.raises(ScopeViolation), use_scope(ALICE):
        await unbound.ainvoke("bees", config(BOB))


async def test_a_store_called_inside_a_chain_step_reads_its_config(backend: Backend) -> None:
    _two_users(backend)
    store = lc.MuxiVectorStore(backend, EMBED)
    step = RunnableLambda(lambda q: store.similarity_search(q, k=4))
    astep = RunnableLambda(lambda q: store.similarity_search(q, k=4), afunc=_asearch(store))
    assert _texts(step.batch(["bees", "bees"], [config(ALICE), config(BOB)])) == [
        ["Alice keeps bees."],
        ["Bob plays chess."],
    ]
    assert _texts(await astep.abatch(["bees"], [config(BOB)])) == [["Bob plays chess."]]
    bound = RunnableLambda(lambda q: store.with_scope(ALICE).similarity_search(q))
    with pytest.raises(ScopeViolation):
        bound.invoke("bees", config(BOB))


def _asearch(store: lc.MuxiVectorStore) -> Callable[[str], Awaitable[list[Any]]]:
    async def search(query: str) -> list[Any]:
        return await store.asimilarity_search(query, k=4)

    return search


# -- LangGraph: MuxiStore reads configurable user_id ----------------------------------------


class State(TypedDict):
    text: str


def _note_graph(store: BaseStore) -> Any:
    def note(state: State) -> State:
        get_store().put(("notes",), "k", {"text": state["text"]})
        return state

    async def anote(state: State) -> State:
        await get_store().aput(("notes",), "k", {"text": state["text"]})
        return state

    graph = StateGraph(State)
    graph.add_node("note", RunnableLambda(note, afunc=anote))
    graph.add_edge(START, "note")
    graph.add_edge("note", END)
    return graph.compile(store=store)


async def test_langgraph_store_acts_for_configurable_user_id(backend: Backend) -> None:
    store = lg.MuxiStore(backend)
    graph = _note_graph(store)
    graph.invoke({"text": "alice's"}, config(ALICE))
    await graph.ainvoke({"text": "bob's"}, config(BOB))
    assert store.for_user(ALICE).get(("notes",), "k").value == {"text": "alice's"}
    assert store.for_user(BOB).get(("notes",), "k").value == {"text": "bob's"}
    assert store.for_user(ALICE_B).get(("notes",), "k") is None
    with pytest.raises(MissingScope):
        graph.invoke({"text": "nobody's"})
    bound = _note_graph(store.for_user(ALICE))
    with pytest.raises(ScopeViolation):
        bound.invoke({"text": "x"}, config(BOB))
    with pytest.raises(ScopeViolation):
        await bound.ainvoke({"text": "x"}, config(BOB))
    assert store.for_user(BOB).get(("notes",), "k").value == {"text": "bob's"}


# -- LangGraph: the agent middleware binds only a user every source names -------------------


def _agent() -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage("hi")] * 4))
    return create_agent(
        model, [], middleware=[lg.MuxiAgentMiddleware()], context_schema=lg.MuxiContext
    )


async def test_the_agent_middleware_refuses_a_run_whose_sources_disagree() -> None:
    ctx = lg.MuxiContext(user_id=ALICE.header, session_id="s1")
    inputs = {"messages": [("user", "hello")]}
    agent = _agent()
    agent.invoke(inputs, config(ALICE, thread_id="s1"), context=ctx)  # no checkpointer here
    with pytest.raises(ScopeViolation):
        agent.invoke(inputs, config(BOB), context=ctx)
    with pytest.raises(ScopeViolation):
        await agent.ainvoke(inputs, config(ALICE_B), context=ctx)
    with use_scope(BOB), pytest.raises(ScopeViolation):
        await agent.ainvoke(inputs, context=ctx)
    with use_scope(ALICE.with_session("s2")), pytest.raises(ScopeViolation):
        agent.invoke(inputs, context=ctx)
