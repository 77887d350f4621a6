from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from muxi_isolation import MissingScope, Scope, current_scope, get_scope, use_scope


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
