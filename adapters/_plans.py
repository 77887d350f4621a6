"""The plan machinery lives in the core (``muxi_isolation.plans``): a method's logic once,
for its sync and its async half. Re-exported here for the adapters, with ``twins`` made to
run in the adapter's module.

The audit trail names an event's interface after the adapter on the call stack (the
``__name__`` of a frame's module, ``muxi_isolation.adapters.<framework>``). A plan is
suspended while its step runs, and the drivers are core code, so the only adapter frame
left is the method pair's own: the pair is built on its plan's module globals, and a
storage event of ``MuxiVectorStore.get_by_ids`` is ``langchain``'s, as it was when the two
halves were written by hand.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from muxi_isolation import plans
from muxi_isolation.plans import Async, Plan, Step, Sync, arun, run, step

__all__ = ["Plan", "Step", "arun", "generator_twins", "run", "step", "twins"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def twins(
    plan: Callable[Concatenate[S, P], Plan[R]],
    name: str | None = None,
    async_name: str | None = None,
) -> tuple[Sync[S, P, R], Async[S, P, R]]:
    """``muxi_isolation.plans.twins`` (names, signature, docstring), the pair's frames in
    the plan's module."""
    made = plans.twins(plan, name, async_name)
    drive, adrive = run, arun  # closed over: the moved code looks up no global

    def sync(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        return drive(plan(self, *args, **kwargs))

    async def async_(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await adrive(plan(self, *args, **kwargs))

    return cast(Any, _moved(sync, made[0], plan)), cast(Any, _moved(async_, made[1], plan))


def generator_twins(
    plan: Callable[Concatenate[S, P], Plan[list[R]]], name: str, async_name: str
) -> tuple[Callable[Concatenate[S, P], Iterator[R]], Callable[Concatenate[S, P], AsyncIterator[R]]]:
    """``twins`` for a framework that wants a generator and an async generator (LangGraph's
    ``list``/``alist``): each yields the items of the list ``plan`` answers."""
    made = plans.twins(plan, name, async_name)
    drive, adrive = run, arun

    def sync(self: Any, /, *args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from drive(plan(self, *args, **kwargs))

    async def async_(self: Any, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        for item in await adrive(plan(self, *args, **kwargs)):
            yield item

    return cast(Any, _moved(sync, made[0], plan)), cast(Any, _moved(async_, made[1], plan))


def _moved(fn: Callable[..., Any], model: Any, plan: Any) -> Callable[..., Any]:
    """``fn`` with ``plan``'s module globals and ``model``'s name, signature and docstring."""
    code: Any = fn
    moved = types.FunctionType(
        code.__code__, plan.__globals__, model.__name__, None, code.__closure__
    )
    moved.__qualname__, moved.__module__ = model.__qualname__, model.__module__
    moved.__doc__ = model.__doc__
    moved.__dict__.update(model.__dict__)  # __signature__, __muxi_plan__
    return moved
