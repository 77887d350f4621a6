"""A method's logic written once, for its sync and its async half.

A plan is a generator method: it yields a ``Step`` for each call that does I/O (a public
method of the backend, of the session manager, of a wrapped store or embedding, or a
framework's callback) and returns the answer. The core's ``SessionManager`` and facade,
and every adapter, make their method pairs this way. ``run`` performs each step with
its sync callable, ``arun`` awaits its async one; nothing else differs, so every check and
every scope rule of the plan holds on both halves. ``twins`` makes a class's method pair
(``get_tuple`` / ``aget_tuple``, or LlamaIndex's ``add_message`` / ``async_add_message``)
from one plan, with the plan's signature and docstring::

    def _get_tuple(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        b = self.backend
        found = yield from step(b.get_checkpoints, b.aget_checkpoints, user, query)
        ...

    get_tuple, aget_tuple = twins(_get_tuple)

A step names the public methods themselves (bound, so the audit hooks wrapped around a
backend's public methods run), both of them: the pair is explicit, and mypy checks that
both take the step's arguments and answer the same type.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar

__all__ = ["Plan", "Step", "arun", "in_thread", "run", "step", "twins"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True)
class Step:
    """One I/O call of a plan: ``sync(*args, **kwargs)``, or awaited ``async_(...)``."""

    sync: Callable[..., Any]
    async_: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


Plan: TypeAlias = Generator[Step, Any, R]


def step(
    sync: Callable[P, R], async_: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
) -> Plan[R]:
    """Call ``sync`` (or await ``async_``) with the arguments; ``yield from`` it for the answer."""
    answer: R = yield Step(sync, async_, args, kwargs)
    return answer


def in_thread(sync: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """The async half of a blocking call that has none: ``sync`` in a worker thread."""

    async def threaded(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(sync, *args, **kwargs)

    return threaded


async def _drive(plan: Plan[R], sync: bool) -> R:
    """Run ``plan`` to its answer: each step's sync half called, or its async half awaited.

    A step's exception is thrown into the plan where it yielded, as if the call had raised
    there: the plan's ``try``/``with`` blocks see it, as straight-line code would.
    """
    answer: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                todo = plan.send(answer) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                if sync:
                    answer = todo.sync(*todo.args, **todo.kwargs)
                else:
                    answer = await todo.async_(*todo.args, **todo.kwargs)
                error = None
            except BaseException as exc:  # thrown into the plan, not kept
                answer, error = None, exc
    finally:
        plan.close()


def run(plan: Plan[R]) -> R:
    """Run ``plan`` to its answer, calling each step's sync half."""
    try:
        _drive(plan, sync=True).send(None)  # awaits nothing: it finishes in this one send
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("a sync plan awaited")  # pragma: no cover


def arun(plan: Plan[R]) -> Coroutine[Any, Any, R]:
    """``run`` for the async half: the same plan, each step's async half awaited."""
    return _drive(plan, sync=False)


Sync: TypeAlias = Callable[Concatenate[S, P], R]
Async: TypeAlias = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def twins(
    plan: Callable[Concatenate[S, P], Plan[R]],
    name: str | None = None,
    async_name: str | None = None,
) -> tuple[Sync[S, P, R], Async[S, P, R]]:
    """The sync method and its async twin, both running ``plan``.

    ``name`` defaults to the plan's without its leading underscore; ``async_name`` to
    ``name`` with an ``a`` after its leading underscores (``_retrieve``: ``_aretrieve``).
    Both carry the plan's signature (frameworks read it: LangChain looks for
    ``run_manager``, LangGraph for ``runtime``) and docstring.
    """
    sync_name = name or plan.__name__.removeprefix("_")
    if async_name is None:
        bare = sync_name.lstrip("_")
        async_name = f"{sync_name[: len(sync_name) - len(bare)]}a{bare}"

    def sync(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return run(plan(self, *args, **kwargs))

    async def async_(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await arun(plan(self, *args, **kwargs))

    signature = inspect.signature(plan).replace(return_annotation=inspect.Signature.empty)
    owner = plan.__qualname__.rpartition(".")[0]
    for fn, fn_name in ((sync, sync_name), (async_, async_name)):
        made: Any = fn
        made.__name__ = fn_name
        made.__qualname__ = f"{owner}.{fn_name}" if owner else fn_name
        made.__module__ = plan.__module__
        made.__doc__ = plan.__doc__
        made.__signature__ = signature
        made.__muxi_plan__ = plan
    return sync, async_
