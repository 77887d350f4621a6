"""Both halves of a wrapper method from one plan of calls to a wrapped object's public methods.

A wrapper of a framework store (``ScopedVectorStore``) decides the same thing on its sync
and async halves; only how it calls the wrapped store differs (``store.get_by_ids(...)`` or
``await store.aget_by_ids(...)``). So each method is written once, as a *plan*: a generator
that yields a ``Call`` for each call to the wrapped object and gets back its answer (or its
exception, raised at the ``yield``), then returns the method's answer. ``drive`` and
``adrive`` run a plan; ``twins`` makes the public pair from it, as
``muxi_isolation.stores.operations.methods`` does for a backend's operations.

Calls go to public methods only, so anything that wraps those (an audit hook, a
framework's callbacks) sees them on both halves alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar

__all__ = ["Call", "Plan", "adrive", "call", "drive", "twins"]

R = TypeVar("R")
S = TypeVar("S")
P = ParamSpec("P")


@dataclass(frozen=True)
class Call:
    """``target.name(*args, **kwargs)``; on the async half ``await target.aname(...)``
    (``"a" + name`` unless given)."""

    target: Any
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    aname: str = ""

    @property
    def async_name(self) -> str:
        return self.aname or f"a{self.name}"


def call(target: Any, name: str, /, *args: Any, **kwargs: Any) -> Call:
    return Call(target, name, args, kwargs)


Plan: TypeAlias = Generator[Call, Any, R]


def drive(plan: Plan[R]) -> R:
    """Run ``plan`` to its answer, making each call on the sync half."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            answer, error = getattr(step.target, step.name)(*step.args, **step.kwargs), None
        except Exception as exc:  # the plan may handle it, else it goes on up
            answer, error = None, exc


async def adrive(plan: Plan[R]) -> R:
    """Run ``plan`` to its answer, awaiting each call on the async half."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            method = getattr(step.target, step.async_name)
            answer, error = await method(*step.args, **step.kwargs), None
        except Exception as exc:
            answer, error = None, exc


def twins(
    plan: Callable[Concatenate[S, P], Plan[R]], aname: str | None = None
) -> tuple[Callable[Concatenate[S, P], R], Callable[Concatenate[S, P], Coroutine[Any, Any, R]]]:
    """The sync method and its async twin (``"a" + name`` unless given) for a plan method
    named ``_<name>``; both show the plan's signature and docstring."""
    name = plan.__name__.lstrip("_")

    def sync(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return drive(plan(self, *args, **kwargs))

    async def async_(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await adrive(plan(self, *args, **kwargs))

    signature = inspect.signature(plan)
    returns = signature.return_annotation
    for fn, fn_name in ((sync, name), (async_, aname or f"a{name}")):
        described: Any = fn
        described.__name__ = fn_name
        described.__qualname__ = plan.__qualname__.rsplit(".", 1)[0] + "." + fn_name
        described.__doc__ = plan.__doc__
        described.__signature__ = signature.replace(return_annotation=_answer(returns))
    return sync, async_


def _answer(annotation: Any) -> Any:
    """``R`` for a plan annotated ``Plan[R]`` (as text, under postponed annotations)."""
    if isinstance(annotation, str) and annotation.startswith("Plan[") and annotation.endswith("]"):
        return annotation[len("Plan[") : -1]
    return inspect.Signature.empty
