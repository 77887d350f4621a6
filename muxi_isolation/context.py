"""The current scope, set once at the edge (middleware, adapters) for one request, and the
one rule that says whose call it is.

Context variables are copied into each thread started with ``contextvars.copy_context`` and
each asyncio task, and changes inside one never show in another. Storage never reads this:
it always takes its scope as an argument.

``resolve`` is the rule every adapter and the HTTP edge apply: each place a call can name
its user (a scope bound to the object, ``use_scope``, a framework's config or runtime
context, the session a call names) is a source; all present sources must name the same
user, and all that name a session the same session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .errors import MissingScope, ScopeViolation
from .scope import Scope

__all__ = ["current_scope", "get_scope", "resolve", "use_scope"]

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


def resolve(*sources: Scope | None, session: str | None = None, hint: str = "") -> Scope:
    """The one scope every present source names, the context's scope included.

    ``sources`` are the adapter's (``None`` where a source is absent); ``session`` is the
    session the call itself names (a thread id, a history's ``session_id``, a chat store
    key). Sources naming two users raise ``ScopeViolation``, never a silent winner; so do
    two sessions of the same user, since a call acts in one session. No source at all
    raises ``MissingScope`` (``hint`` says how to name one): never a default user. The
    messages name no ids, as they may reach a client that sent only one of them.

    Returns the agreed user with the agreed session, or without one if none was named.
    """
    found = [s for s in (*sources, _current.get()) if s is not None]
    if not found:
        raise MissingScope(hint or "no user for this call: bind a scope or use use_scope()")
    for scope in found:
        if not isinstance(scope, Scope):  # an odd object must not pass as agreement
            raise MissingScope(f"a Scope is required, got {type(scope).__name__}")
    user = found[0].user()
    if any(not s.same_user(user) for s in found):
        raise ScopeViolation("the sources of this call name different users")
    sessions = [s.session_id for s in found]
    if session is not None:
        sessions.append(user.with_session(session).session_id)
    named = {s for s in sessions if s is not None}
    if len(named) > 1:
        raise ScopeViolation("the sources of this call name different sessions of one user")
    return user.with_session(named.pop()) if named else user
