"""Which scope an adapter object acts for: the one it was built with, else the context's.

Every adapter takes an optional ``scope``. Given one, the object is bound to that user for
its whole life. Without one, each call reads ``muxi_isolation.context.current_scope()`` (set
by the HTTP middleware or ``use_scope``) and fails closed with ``MissingScope`` when none is
set: never a read of everything.
"""

from __future__ import annotations

from muxi_isolation.context import get_scope
from muxi_isolation.policy import require_scope
from muxi_isolation.scope import Scope

__all__ = ["resolve_scope"]


def resolve_scope(bound: Scope | None) -> Scope:
    return get_scope() if bound is None else require_scope(bound)
