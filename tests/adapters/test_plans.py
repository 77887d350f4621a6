"""One plan, both halves (``adapters/_plans.py``): what the drivers promise the plans.

Every adapter method pair is one plan run by ``run`` or ``arun``; the plans rely on a step's
exception arriving where the step was yielded (``MuxiChatStore`` creates a missing session
in an ``except SessionNotFound``, the agent middleware unbinds its scope in a ``with``), on
both halves alike, and on the pair carrying the framework's signature.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from muxi_isolation import Backend, Memory, Scope
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import langgraph as lg
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.adapters._plans import Plan, arun, run, step, twins
from muxi_isolation.audit import MISSING, Auditor, read_events


class Flaky:
    """A resource whose first call fails, with a sync and an async half."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def fetch(self, x: int) -> int:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return x * 2

    async def afetch(self, x: int) -> int:
        return self.fetch(x)


class Client:
    def __init__(self, resource: Flaky) -> None:
        self.resource = resource
        self.log: list[str] = []

    @contextmanager
    def _bound(self) -> Iterator[None]:
        self.log.append("enter")
        try:
            yield
        finally:
            self.log.append("exit")

    def _fetch_twice(self, x: int, *, retry: bool = True) -> Plan[int]:
        """Fetch ``x``, once more if the first call fails."""
        r = self.resource
        with self._bound():
            try:
                return (yield from step(r.fetch, r.afetch, x))
            except LookupError:
                if not retry:
                    raise
                self.log.append("retry")
                return (yield from step(r.fetch, r.afetch, x))

    fetch_twice, afetch_twice = twins(_fetch_twice)


def test_a_steps_exception_reaches_the_plan_where_it_yielded_on_both_halves() -> None:
    sync, async_ = Client(Flaky(KeyError("x"))), Client(Flaky(KeyError("x")))
    assert sync.fetch_twice(21) == 42
    assert asyncio.run(async_.afetch_twice(21)) == 42
    assert sync.log == async_.log == ["enter", "retry", "exit"]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyError("x")])
def test_an_exception_the_plan_lets_through_leaves_its_with_block_on_both_halves(
    error: Exception,
) -> None:
    sync, async_ = Client(Flaky(error)), Client(Flaky(error))
    with pytest.raises(type(error)):
        sync.fetch_twice(1, retry=False)
    with pytest.raises(type(error)):
        asyncio.run(async_.afetch_twice(1, retry=False))
    assert sync.log == async_.log == ["enter", "exit"]


def test_a_cancelled_step_unwinds_the_plan() -> None:
    client = Client(Flaky(asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(client.afetch_twice(1))
    assert client.log == ["enter", "exit"]


def test_run_and_arun_answer_a_plan_without_steps() -> None:
    def plain() -> Plan[int]:
        return 7
        yield  # a generator that never steps

    assert run(plain()) == asyncio.run(arun(plain())) == 7


def test_twins_carry_the_plans_signature_docstring_and_names() -> None:
    sync, async_ = Client.fetch_twice, Client.afetch_twice
    assert not inspect.iscoroutinefunction(sync) and inspect.iscoroutinefunction(async_)
    assert (sync.__name__, async_.__name__) == ("fetch_twice", "afetch_twice")
    assert async_.__qualname__ == "Client.afetch_twice"
    assert sync.__doc__ == async_.__doc__ == "Fetch ``x``, once more if the first call fails."
    bound = Client(Flaky(KeyError())).afetch_twice
    assert str(inspect.signature(bound)) == "(x: 'int', *, retry: 'bool' = True)"


# The pairs each adapter makes from one plan, with the framework's names for them.
PAIRS = [
    (lg.MuxiCheckpointer, "get_tuple", "aget_tuple"),
    (lg.MuxiCheckpointer, "put", "aput"),
    (lg.MuxiCheckpointer, "put_writes", "aput_writes"),
    (lg.MuxiCheckpointer, "delete_thread", "adelete_thread"),
    (lg.MuxiCheckpointer, "copy_thread", "acopy_thread"),
    (lg.MuxiCheckpointer, "prune", "aprune"),
    (lg.MuxiCheckpointer, "delete_for_runs", "adelete_for_runs"),
    (lg.MuxiAgentMiddleware, "wrap_model_call", "awrap_model_call"),
    (lg.MuxiAgentMiddleware, "wrap_tool_call", "awrap_tool_call"),
    (li.MuxiChatStore, "add_message", "async_add_message"),
    (li.MuxiChatStore, "delete_last_message", "adelete_last_message"),
    (li.MuxiVectorStore, "add", "async_add"),
    (li.MuxiVectorStore, "query", "aquery"),
    (li.ScopedRetriever, "_retrieve", "_aretrieve"),
    (lc.MuxiVectorStore, "add_texts", "aadd_texts"),
    (lc.MuxiVectorStore, "max_marginal_relevance_search", "amax_marginal_relevance_search"),
    (lc.MuxiRetriever, "_get_relevant_documents", "_aget_relevant_documents"),
    (lc.MuxiVectorStore, "close", "aclose"),
    (lc.MuxiVectorStore, "__exit__", "__aexit__"),
]


@pytest.mark.parametrize(("cls", "sync", "async_"), PAIRS)
def test_an_adapters_pair_is_one_plan(cls: type, sync: str, async_: str) -> None:
    plan = getattr(getattr(cls, sync), "__muxi_plan__", None)
    assert plan is not None and getattr(getattr(cls, async_), "__muxi_plan__", None) is plan
    assert inspect.iscoroutinefunction(getattr(cls, async_))


def test_langgraphs_list_pair_is_one_plan_and_stays_an_iterator_pair() -> None:
    # LangGraph iterates list/alist: made from one plan, they are still (async) generators.
    sync, async_ = lg.MuxiCheckpointer.list, lg.MuxiCheckpointer.alist
    plan = getattr(sync, "__muxi_plan__", None)
    assert plan is not None and getattr(async_, "__muxi_plan__", None) is plan
    assert inspect.isgeneratorfunction(sync) and inspect.isasyncgenfunction(async_)


def test_the_retriever_keeps_langchains_run_manager_protocol() -> None:
    # BaseRetriever reads the signature to decide whether to pass run_manager.
    assert lc.MuxiRetriever._new_arg_supported is True


def test_a_storage_event_under_a_plan_names_its_adapter_on_both_halves(backend: Backend) -> None:
    # The plan is suspended while its step runs: the pair's own frame names the adapter.
    backend.audit = Auditor.database(backend)
    backend.upsert_memories(Scope("tenant_a", "bob"), [Memory("b1", "x")])
    store = lc.MuxiVectorStore(backend, lc.HashingEmbeddings(8), scope=Scope("tenant_a", "al"))
    assert store.get_by_ids(["b1"]) == []
    assert asyncio.run(store.aget_by_ids(["b1"])) == []
    events = [(e.interface, e.operation, e.outcome) for e in read_events(backend)]
    assert events == [("langchain", "get_memories", MISSING)] * 2
