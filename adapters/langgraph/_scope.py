"""Whose checkpoint or store item this is: the scope, from wherever LangGraph carries it.

Sources, all of which must agree on one (tenant, user) when several are present:

- a scope bound to the saver or store (``for_user``);
- ``config["configurable"]["user_id"]`` in ``X-Muxi-User-Id`` form (``tenant_a:user_1``);
- the agent's runtime context (``context=`` of ``invoke``, typed by ``context_schema``),
  an object or dict with ``user_id`` and ``session_id``; LangGraph passes its runtime in
  the config it hands to the checkpointer, and in the config of every node and tool; the
  calls without ``context=`` (``get_state``, ``get_state_history``, ``update_state``) take
  the same context as ``config["context"]``;
- ``muxi_isolation.context.current_scope()``, set at the edge (middleware, HTTP).

None of them: ``MissingScope``. Two that disagree: ``ScopeViolation``. Never a default user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from muxi_isolation.context import current_scope
from muxi_isolation.errors import MissingScope, ScopeViolation
from muxi_isolation.scope import Scope

try:  # LangGraph's own key for the runtime inside a config (what get_runtime() reads)
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
except ImportError:  # pragma: no cover - the key has had this value since langgraph 0.6
    CONFIG_KEY_RUNTIME = "__pregel_runtime"

__all__ = [
    "context_scope",
    "current_scope",
    "graph_config_scope",
    "header_scope",
    "resolve",
    "runtime_scope",
]


def _field(source: object, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def context_scope(context: object) -> Scope | None:
    """The scope an agent's runtime context names (``user_id`` and maybe ``session_id``)."""
    if context is None:
        return None
    user = _field(context, "user_id")
    if user is None:
        return None
    session = _field(context, "session_id")
    return Scope.parse(user, None if session is None else str(session))


def runtime_scope(config: Mapping[str, Any] | None) -> Scope | None:
    """The scope of the runtime context a LangGraph config carries, if any.

    During a run LangGraph puts its runtime in the config. The calls that take no
    ``context=`` (``get_state``, ``get_state_history``, ``update_state``) carry the same
    context as ``config["context"]`` (``get_state_history`` moves it to
    ``configurable["context"]``); those present must name one user and session.
    """
    config = config or {}
    configurable = config.get("configurable") or {}
    runtime = configurable.get(CONFIG_KEY_RUNTIME)
    contexts = (
        getattr(runtime, "context", None),
        config.get("context"),
        configurable.get("context"),
    )
    found = [scope for scope in map(context_scope, contexts) if scope is not None]
    if not found:
        return None
    sessions = {s.session_id for s in found if s.session_id is not None}
    if len(sessions) > 1 or any(not s.same_user(found[0]) for s in found):
        raise ScopeViolation("the config carries runtime contexts naming different scopes")
    return found[0].user().with_session(sessions.pop()) if sessions else found[0]


def header_scope(config: Mapping[str, Any] | None) -> Scope | None:
    header = ((config or {}).get("configurable") or {}).get("user_id")
    return None if header is None else Scope.parse(header)


def graph_config_scope() -> Scope | None:
    """The runtime context's scope when called inside a LangGraph node or tool."""
    try:
        from langgraph.config import get_config

        config = get_config()
    except (ImportError, RuntimeError):
        return None
    return runtime_scope(config)


def resolve(*candidates: Scope | None) -> Scope:
    """The one user every present source names (user level: no session)."""
    found = [c for c in candidates if c is not None]
    if not found:
        raise MissingScope(
            "no user for this call: pass configurable user_id, a runtime context with "
            "user_id, bind one with for_user(), or set one with use_scope()"
        )
    first = found[0]
    for other in found[1:]:
        if not other.same_user(first):
            raise ScopeViolation(f"conflicting users for one call: {first} and {other}")
    return first.user()
