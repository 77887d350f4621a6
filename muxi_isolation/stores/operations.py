"""Storage operations as data, run by one pipeline for both halves.

Each storage operation is one frozen dataclass. Made by its ``prepare`` (the caller's
arguments), it has already failed closed on a missing scope, checked its input and stamped
its writes; it declares the level of scope it needs (``level``), the backend primitive it
asks for (``name``, with ``args``) and whether that writes. Its ``plan`` yields the
primitives it needs (usually itself, once, through ``perform``) and returns the caller's
answer, verified.

A plan is a ``plans`` plan: ``plans.run`` and ``plans.arun`` run it, and they differ only in
how a primitive is performed (``Backend._perform`` or ``await Backend._aperform``), so every
check is written once and holds on the sync and the async half alike. ``methods`` makes a
backend's public pair (``get_messages``/``aget_messages``) from one operation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypeVar,
)

from .. import policy
from ..plans import Plan, arun, run, step
from ..policy import Stamped
from ..quotas import Limits
from ..scope import Scope

__all__ = [
    "Context",
    "Level",
    "OfUser",
    "Operation",
    "Plan",
    "SessionOperation",
    "UserOperation",
    "Verified",
    "VerifiedOne",
    "methods",
    "perform",
]

R = TypeVar("R")
S = TypeVar("S", bound=Stamped)
U = TypeVar("U", bound="OfUser[Any]")
P = ParamSpec("P")
Level: TypeAlias = Literal["session", "user", "tenant"]


class Context(Protocol):
    """What a plan may use of the backend running it."""

    limits: Limits

    def _perform(self, op: Operation[Any]) -> Any: ...

    async def _aperform(self, op: Operation[Any]) -> Any: ...


@dataclass(frozen=True)
class Operation(Generic[R]):
    """One storage operation: its checked arguments, what it needs, what it returns."""

    name: ClassVar[str]  # the public method (``a``-prefixed twin) and the primitive ``_name``
    level: ClassVar[Level]  # session: one session; user: one user; tenant: the admin path
    write: ClassVar[bool] = False
    admin: ClassVar[bool] = False  # the audit trail records it always, as an admin act
    audit_ids: ClassVar[str | None] = None  # the argument whose ids its audit event names

    if TYPE_CHECKING:  # a field of each operation (``None`` on the admin path)

        @property
        def scope(self) -> Scope | None: ...

    def args(self) -> tuple[Any, ...]:
        """The primitive's arguments: the fields, in order (a frozen instance's ``__dict__``
        holds exactly its fields, set in order; ``dataclasses.fields`` costs 3x more)."""
        return tuple(vars(self).values())

    def plan(self, backend: Context) -> Plan[R]:
        """One primitive, its answer as it is (operations that verify override this)."""
        answer: R = yield from perform(backend, self)
        return answer


@dataclass(frozen=True)
class Verified(Operation[list[S]]):
    """Answers records, each verified as the caller's (another's is dropped and logged)."""

    scope: Scope

    def plan(self, backend: Context) -> Plan[list[S]]:
        return policy.verify(self.scope, (yield from perform(backend, self)))


@dataclass(frozen=True)
class VerifiedOne(Operation[S | None]):
    """Answers one record or ``None``, verified as the caller's."""

    scope: Scope

    def plan(self, backend: Context) -> Plan[S | None]:
        found = yield from perform(backend, self)
        return next(iter(policy.verify(self.scope, [found] if found else [])), None)


@dataclass(frozen=True)
class UserOperation(Operation[R]):
    """Acts for the caller's user: ``owner`` is the scope it keeps (fails closed)."""

    level: ClassVar[Level] = "user"
    scope: Scope

    @staticmethod
    def owner(scope: Scope) -> Scope:
        return policy.require_scope(scope).user()


@dataclass(frozen=True)
class SessionOperation(UserOperation[R]):
    """Acts in one session of the caller's user: ``owner`` keeps the session as well."""

    level = "session"

    @staticmethod
    def owner(scope: Scope) -> Scope:
        return policy.require_scope(scope, session=True)


@dataclass(frozen=True)
class OfUser(UserOperation[R]):
    """Needs nothing but the caller's user: the scope, at the user level."""

    @classmethod
    def prepare(cls: type[U], scope: Scope) -> U:
        return cls(cls.owner(scope))


def perform(backend: Context, op: Operation[R]) -> Plan[R]:
    """The backend's primitive for ``op``, as a plan's step: ``yield from`` it for the answer."""
    answer: R = yield from step(backend._perform, backend._aperform, op)
    return answer


Sync: TypeAlias = "Callable[Concatenate[Any, P], R]"
Async: TypeAlias = "Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]"


def methods(prepare: Callable[P, Operation[R]]) -> tuple[Sync[P, R], Async[P, R]]:
    """The public sync method and its ``a`` twin for the operation ``prepare`` makes."""
    op: Any = getattr(prepare, "__self__", None)  # the class of a ``prepare`` classmethod
    name = op.name

    def sync(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return run(prepare(*args, **kwargs).plan(self))

    async def async_(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await arun(prepare(*args, **kwargs).plan(self))

    signature = inspect.signature(prepare)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    signature = signature.replace(
        parameters=[self_param, *signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    for fn, fn_name in ((sync, name), (async_, f"a{name}")):
        described: Any = fn
        described.__name__ = described.__qualname__ = fn_name
        described.__doc__ = op.__doc__
        described.__signature__ = signature  # what help() and the docs show
        described.__muxi_operation__ = op
    return sync, async_
