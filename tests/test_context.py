from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading

import pytest

from muxi_isolation import (
    MissingScope,
    Scope,
    ScopeViolation,
    current_scope,
    get_scope,
    use_scope,
)
from muxi_isolation.context import resolve


def test_use_scope_sets_and_restores() -> None:
    assert current_scope() is None
    with pytest.raises(MissingScope):
        get_scope()
    outer, inner = Scope("t", "a"), Scope("t", "b")
    with use_scope(outer):
        assert get_scope() == outer
        with use_scope(inner):
            assert get_scope() == inner
        assert get_scope() == outer
    assert current_scope() is None


def test_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError), use_scope(Scope("t", "a")):
        raise RuntimeError
    assert current_scope() is None


def test_refuses_anything_but_a_scope() -> None:
    with pytest.raises(MissingScope), use_scope("t:a"):  # type: ignore[arg-type]
        pass


def test_threads_do_not_see_each_others_scope() -> None:
    seen: dict[str, Scope | None] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        with use_scope(Scope("t", name)):
            barrier.wait()
            seen[name] = current_scope()

    def bare() -> None:
        barrier.wait()
        seen["bare"] = current_scope()

    with use_scope(Scope("t", "main")):
        threads = [threading.Thread(target=run, args=("a",)), threading.Thread(target=bare)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert seen == {"a": Scope("t", "a"), "bare": None}


def test_copied_context_does_not_leak_back() -> None:
    ctx = contextvars.copy_context()

    def inside() -> None:
        with use_scope(Scope("t", "x")):
            pass

    ctx.run(inside)
    assert current_scope() is None


async def test_tasks_do_not_see_each_others_scope() -> None:
    async def run(name: str) -> Scope | None:
        with use_scope(Scope("t", name)):
            await asyncio.sleep(0.01)
            return current_scope()

    async def bare() -> Scope | None:
        await asyncio.sleep(0.005)
        return current_scope()

    results = await asyncio.gather(*(run(f"u{i}") for i in range(20)), bare())
    assert results[:-1] == [Scope("t", f"u{i}") for i in range(20)]
    assert results[-1] is None


# -- resolve: the one scope rule every adapter and the HTTP edge apply -----------------------

ALICE, BOB = Scope("t", "alice"), Scope("t", "bob")

AGREEING = [  # (sources, use_scope's, the call's session, expected)
    ((ALICE,), None, None, ALICE),
    ((None, ALICE), None, None, ALICE),
    ((ALICE, ALICE), ALICE, None, ALICE),
    ((ALICE,), ALICE.with_session("s1"), None, ALICE.with_session("s1")),
    ((ALICE.with_session("s1"), None), ALICE, "s1", ALICE.with_session("s1")),
    ((), ALICE, "s1", ALICE.with_session("s1")),
]

CONFLICTS = [  # (sources, use_scope's, the call's session)
    ((ALICE, BOB), None, None),
    ((ALICE,), BOB, None),
    ((ALICE,), Scope("other", "alice"), None),  # same user id, another tenant
    ((ALICE.with_session("s1"), ALICE.with_session("s2")), None, None),
    ((ALICE,), ALICE.with_session("s1"), "s2"),
    ((ALICE.with_session("s1"),), None, "s2"),
]


@pytest.mark.parametrize(("sources", "ambient", "session", "expected"), AGREEING)
def test_resolve_gives_the_scope_every_source_names(
    sources: tuple[Scope | None, ...], ambient: Scope | None, session: str | None, expected: Scope
) -> None:
    with contextlib.ExitStack() as stack:
        if ambient is not None:
            stack.enter_context(use_scope(ambient))
        assert resolve(*sources, session=session) == expected


@pytest.mark.parametrize(("sources", "ambient", "session"), CONFLICTS)
def test_resolve_refuses_sources_that_disagree(
    sources: tuple[Scope | None, ...], ambient: Scope | None, session: str | None
) -> None:
    with contextlib.ExitStack() as stack:
        if ambient is not None:
            stack.enter_context(use_scope(ambient))
        with pytest.raises(ScopeViolation) as caught:
            resolve(*sources, session=session)
    assert "alice" not in str(caught.value) and "bob" not in str(caught.value)


def test_resolve_without_a_source_is_missing_scope() -> None:
    with pytest.raises(MissingScope, match="bind a scope"):
        resolve()
    with pytest.raises(MissingScope, match="say who"):
        resolve(None, None, session="s1", hint="say who")
    with pytest.raises(MissingScope):
        resolve(ALICE, "t:alice")  # type: ignore[arg-type]
