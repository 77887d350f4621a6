"""Whose checkpoint or store item this is: the scope, from wherever LangGraph carries it.

Sources, all of which must agree on one (tenant, user) when several are present:

- a scope bound to the saver or store (``for_user``);
- ``config["configurable"]["user_id"]`` in ``X-Muxi-User-Id`` form (``tenant_a:user_1``);
- the agent's runtime context (``context=`` of ``invoke``, typed by ``context_schema``),
  an object or dict with ``user_id`` and ``session_id``; LangGraph passes its runtime in
  the config it hands to the checkpointer, and in the config of every node and tool; the
  calls without ``context=`` (``get_state``, ``get_state_history``, ``update_state``) take
  the same context as ``config["context"]``;
- ``muxi_isolation.context.current_scope()``, set at the edge (middleware, HTTP);
- for the checkpointer, the ``thread_id`` (a session id of the user).

``muxi_isolation.context.resolve`` applies the rule, as in every adapter: none of them is
``MissingScope``, two that name different users or sessions are ``ScopeViolation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import copy
from typing import Any, TypeVar

from muxi_isolation import policy
from muxi_isolation.context import resolve
from muxi_isolation.scope import Scope

try:  # LangGraph's own key for the runtime inside a config (what get_runtime() reads)
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
except ImportError:  # pragma: no cover - the key has had this value since langgraph 0.6
    CONFIG_KEY_RUNTIME = "__pregel_runtime"

__all__ = [
    "HINT",
    "bound_copy",
    "config_scopes",
    "context_scope",
    "graph_config",
    "header_scope",
    "resolve",
    "user_scope",
]

T = TypeVar("T")

HINT = (
    "no user for this call: pass configurable user_id, a runtime context with user_id, "
    "bind one with for_user(), or set one with use_scope()"
)


def user_scope(scope: Scope | None) -> Scope | None:
    """The (tenant, user) a saver or store is bound to, if any (its session is not kept)."""
    return None if scope is None else policy.require_scope(scope).user()


def bound_copy(owner: T, scope: Scope) -> T:
    """``for_user`` of a saver or store: a copy acting for ``scope``'s user alone."""
    bound: Any = copy(owner)
    bound.scope = policy.require_scope(scope).user()
    bound._owned = None  # the original closes the backend it opened
    return bound  # type: ignore[no-any-return]


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


def runtime_scopes(config: Mapping[str, Any] | None) -> list[Scope | None]:
    """The scopes of the runtime contexts a LangGraph config carries (sources for ``resolve``).

    During a run LangGraph puts its runtime in the config. The calls that take no
    ``context=`` (``get_state``, ``get_state_history``, ``update_state``) carry the same
    context as ``config["context"]`` (``get_state_history`` moves it to
    ``configurable["context"]``).
    """
    config = config or {}
    configurable = config.get("configurable") or {}
    runtime = configurable.get(CONFIG_KEY_RUNTIME)
    contexts = (
        getattr(runtime, "context", None),
        config.get("context"),
        configurable.get("context"),
    )
    return [context_scope(c) for c in contexts]


def config_scopes(config: Mapping[str, Any] | None) -> list[Scope | None]:
    """Every source a LangGraph config holds: its runtime contexts and configurable user_id."""
    return [*runtime_scopes(config), header_scope(config)]


def header_scope(config: Mapping[str, Any] | None) -> Scope | None:
    header = ((config or {}).get("configurable") or {}).get("user_id")
    return None if header is None else Scope.parse(header)


def graph_config() -> Mapping[str, Any] | None:
    """The config of the LangGraph node or tool this runs in, or ``None`` outside one."""
    try:
        from langgraph.config import get_config

        return get_config()
    except (ImportError, RuntimeError):
        return None
