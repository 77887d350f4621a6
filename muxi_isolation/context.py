"""The current scope, set once at the edge (middleware, adapters) for one request.

Context variables are copied into each thread started with ``contextvars.copy_context`` and
each asyncio task, and changes inside one never show in another. Storage never reads this:
it always takes its scope as an argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .errors import MissingScope
from .scope import Scope

__all__ = ["current_scope", "get_scope", "use_scope"]

_current: ContextVar[Scope | None] = ContextVar("muxi_isolation_scope", default=None)


def current_scope() -> Scope | None:
    """The scope set for this context, or ``None``."""
    return _current.get()


def get_scope() -> Scope:
    """The scope set for this context; raises ``MissingScope`` if there is none."""
    scope = _current.get()
    if scope is None:
        raise MissingScope("no scope is set for this context; wrap the call in use_scope()")
    return scope


@contextmanager
def use_scope(scope: Scope) -> Iterator[Scope]:
    """Set ``scope`` for the duration of the block, restoring the previous one after."""
    if not isinstance(scope, Scope):
        raise MissingScope(f"use_scope() needs a Scope, got {type(scope).__name__}")
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
