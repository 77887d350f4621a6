"""The isolation policy: the only place that decides what a scope may see.

Three pure functions of a scope and a record, used by every backend and adapter:

- ``stamp``: put the scope on a record before it is written;
- ``read_filter``: check a caller's filter and build the filter a read runs with;
- ``verify``: check every record that comes back from storage, dropping anything foreign.

For stores we do not own, the scope travels in reserved metadata keys (``RESERVED_KEYS``);
a caller may never set or filter on those, nor on the bare scope field names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from . import _input
from .audit import note_dropped
from .errors import InvalidFilter, MissingScope, ReservedKey, ScopeViolation
from .filters import And, Compare, Filter, Not, Or, filter_keys, parse_filter
from .records import Memory, Message, Receipt, SessionRecord
from .scope import Scope

__all__ = [
    "RESERVED_KEYS",
    "SCOPE_FIELDS",
    "caller_id",
    "check_int",
    "check_json",
    "check_metadata",
    "delete_filter",
    "dropped",
    "foreign_id",
    "foreign_id_prefix",
    "owner",
    "read_filter",
    "refuse_scope_keys",
    "require_scope",
    "scope_metadata",
    "stamp",
    "stamp_metadata",
    "verify",
    "verify_metadata",
]

log = logging.getLogger("muxi_isolation.policy")

TENANT_KEY = "muxi_tenant_id"
USER_KEY = "muxi_user_id"
SESSION_KEY = "muxi_session_id"
RESERVED_KEYS = frozenset({TENANT_KEY, USER_KEY, SESSION_KEY})
SCOPE_FIELDS = frozenset({"tenant_id", "user_id", "session_id"})
# What no caller filter may name, in any store: the scope is applied around the filter.
FORBIDDEN_FILTER_KEYS = RESERVED_KEYS | SCOPE_FIELDS

R = TypeVar("R", Message, Memory, SessionRecord, Receipt)


class Stamped(Protocol):
    """Any stored record: it carries the scope it was written for."""

    @property
    def scope(self) -> Scope | None: ...


S = TypeVar("S", bound=Stamped)


def require_scope(scope: object, *, session: bool = False) -> Scope:
    """Fail closed: no scope (or no session where one is needed) is an error."""
    if not isinstance(scope, Scope):
        raise MissingScope(f"a Scope is required, got {type(scope).__name__}")
    if session and scope.session_id is None:
        raise MissingScope("this call needs a scope with a session_id")
    return scope


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of the caller's metadata; reserved keys in it are an error, never overwritten."""
    data = dict(metadata or {})
    clash = RESERVED_KEYS.intersection(data)
    if clash:
        raise ReservedKey(f"metadata may not set reserved keys: {sorted(clash)}")
    return data


def stamp(scope: Scope, record: R) -> R:
    """The record as it will be stored for ``scope``.

    Messages are stamped with the full scope (they need a session); memories with the
    scope as given (the session, if any, records where the memory was made); session
    records and receipts with the user.
    """
    target = owner(require_scope(scope, session=isinstance(record, Message)), record.scope)
    if isinstance(record, SessionRecord):
        return replace(record, scope=target.user())
    if isinstance(record, Receipt):
        check_json(record.response, "receipt")
        return replace(record, scope=target.user())
    check_metadata(record.metadata)
    if isinstance(record, Message):
        check_json([record.content, record.metadata, record.tool_calls], "message content")
        if type(record) is Message:  # ``replace`` reads the fields on each call: 3x this
            m = record
            made = Message(
                m.role, m.content, m.metadata, m.tool_calls, m.status, m.created_at, m.seq, target
            )
            return made  # type: ignore[return-value]  # R is Message here
    else:
        check_json(record.metadata, "memory metadata")
    return replace(record, scope=target)


def owner(target: Scope, stamped: Scope | None) -> Scope:
    """``target``, unless a record already stamped for another user is to be written there."""
    if stamped is not None and not stamped.same_user(target):
        raise ScopeViolation("a record already stamped for another user cannot be written here")
    return target


def read_filter(caller: Mapping[str, Any] | Filter | None) -> Filter | None:
    """Validate a caller's metadata filter: it may not name a scope or reserved key.

    The scope itself is never expressed in this filter: backends apply it as separate
    equality predicates around it, so no caller filter (an OR, a NOT) can widen it.
    """
    if caller is not None and not isinstance(caller, (Mapping, Compare, And, Or, Not)):
        raise InvalidFilter(f"a filter must be a dict, not {type(caller).__name__}")
    node = caller if caller is None or not isinstance(caller, Mapping) else parse_filter(caller)
    refuse_scope_keys(filter_keys(node))
    return node


def refuse_scope_keys(keys: Iterable[str], *, allowed: frozenset[str] = frozenset()) -> None:
    """``ReservedKey`` if a caller's filter names a scope or reserved key (``allowed``: bare
    field names an adapter stores under another name, so they name no scope)."""
    named = (set(keys) & FORBIDDEN_FILTER_KEYS) - allowed
    if named:
        raise ReservedKey(f"filters may not name scope keys: {sorted(named)}")


def delete_filter(caller: Mapping[str, Any] | Filter | None) -> Filter:
    """``read_filter`` for a delete: a filter that selects everything (``{}``, or a tree
    that is true for any record) is refused, since it would delete all the user has."""
    node = read_filter(caller)
    if node is None or _constant(node, True):
        raise InvalidFilter("a delete filter must select something: this one matches everything")
    return node


def _constant(node: Filter, value: bool) -> bool:
    """Whether ``node`` is ``value`` for every record, as far as its shape shows."""
    if isinstance(node, Compare):  # only an empty $in / $any is constant (false)
        return not value and node.op in ("$in", "$any") and not node.value
    if isinstance(node, Not):
        return _constant(node.item, not value)
    every = isinstance(node, And) == value
    if every:
        return all(_constant(item, value) for item in node.items)
    if isinstance(node, Or) == value and any(_negation(i) in node.items for i in node.items):
        return True  # X or not X; X and not X
    return any(_constant(item, value) for item in node.items)


def _negation(node: Filter) -> Filter:
    if isinstance(node, Not):
        return node.item
    if isinstance(node, Compare) and node.op == "$exists":
        return Compare(node.key, "$exists", not node.value)
    return Not(node)


def _visible(scope: Scope, owner: Scope | None, *, session: bool) -> bool:
    if owner is None or not owner.same_user(scope):
        return False
    return not session or owner.session_id == scope.session_id


def verify(scope: Scope, records: Iterable[S]) -> list[S]:
    """Keep only records stamped for ``scope``; report anything else and drop it.

    Messages must match the session too; every other record (memories, session records,
    LangGraph checkpoints and store items) only the (tenant, user).
    """
    kept: list[S] = []
    for record in records:
        if _visible(scope, record.scope, session=isinstance(record, Message)):
            kept.append(record)
        else:
            dropped(scope, "record", "storage", getattr(record, "id", None))
    return kept


def dropped(
    scope: Scope, what: str, source: str, target: str | None = None, level: int = logging.ERROR
) -> None:
    """Report a record from outside ``scope`` that verification dropped: one logger
    (``muxi_isolation.policy``) and one audit event, for our stores and foreign ones."""
    log.log(level, "dropped a %s from outside %s returned by %s", what, scope, source)
    note_dropped(scope, target)


def scope_metadata(scope: Scope) -> dict[str, str]:
    """The reserved keys that stamp a record in a store we do not own."""
    data = {TENANT_KEY: scope.tenant_id, USER_KEY: scope.user_id}
    if scope.session_id is not None:
        data[SESSION_KEY] = scope.session_id
    return data


def stamp_metadata(scope: Scope, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller metadata plus the scope's reserved keys (caller reserved keys are an error)."""
    return {**check_metadata(metadata), **scope_metadata(require_scope(scope))}


def verify_metadata(scope: Scope, metadata: Mapping[str, Any] | None) -> bool:
    """Whether a foreign store's record carries this (tenant, user)'s stamp."""
    data = metadata or {}
    return data.get(TENANT_KEY) == scope.tenant_id and data.get(USER_KEY) == scope.user_id


def foreign_id_prefix(scope: Scope) -> str:
    """The per-user namespace of record ids in a store we do not own, so users' ids never
    collide in a shared table (NUL never occurs in an id, so the hash names one pair)."""
    digest = hashlib.sha256(f"{scope.tenant_id}\0{scope.user_id}".encode()).hexdigest()
    return f"muxi:{digest[:32]}:"


def foreign_id(scope: Scope, caller_id: str) -> str:
    """The id a caller's record is stored under in a store we do not own."""
    return foreign_id_prefix(scope) + caller_id


def caller_id(scope: Scope, stored_id: str) -> str | None:
    """The caller's own id for a stored id, or ``None`` if it is not in ``scope``'s namespace."""
    prefix = foreign_id_prefix(scope)
    return stored_id[len(prefix) :] if stored_id.startswith(prefix) else None


def check_int(value: Any, what: str, *, minimum: int = _input.INT64_MIN) -> int:
    """A 64-bit integer (what SQLite and PostgreSQL bind), at least ``minimum``; else
    ``InvalidInput`` naming ``what``, the same on every backend."""
    return _input.check_int(value, what, minimum=minimum)


def check_json(value: Any, what: str) -> None:
    """Refuse what JSON (or any backend) cannot hold before anything is written, the same on
    every backend: ``InvalidInput`` for NaN, non-JSON values, NUL or a lone surrogate."""
    _input.check_json(value, what)
