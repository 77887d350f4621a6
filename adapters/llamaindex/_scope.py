"""Which scope an adapter object acts for: every source it has, agreeing.

Every adapter takes an optional ``scope``. The sources of a call are that bound scope,
``muxi_isolation.context.current_scope()`` (set by the HTTP middleware or ``use_scope``)
and, for a chat store, the key (a session id of the user). ``muxi_isolation.context.resolve``
applies the one rule: sources naming different users or sessions are ``ScopeViolation``
(a bound scope never silently wins), and none is ``MissingScope``: never a read of
everything.
"""

from __future__ import annotations

from muxi_isolation.context import resolve
from muxi_isolation.policy import require_scope
from muxi_isolation.scope import Scope

__all__ = ["resolve_scope"]

HINT = "no user for this call: bind a scope to the store or set one with use_scope()"


def resolve_scope(bound: Scope | None, session: str | None = None) -> Scope:
    return resolve(None if bound is None else require_scope(bound), session=session, hint=HINT)
