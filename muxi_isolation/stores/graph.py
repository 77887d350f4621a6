"""Storage for agent graphs (LangGraph checkpoints and store items), scoped like the rest.

Framework-neutral: checkpoints and pending writes travel as opaque serialized blobs with
JSON metadata, store items as JSON values under a namespace tuple. Everything belongs to
one (tenant, user), kept in separate fields and compared by equality:

- a *thread* is a session id of that user: another user's thread id does not exist for you;
- a *namespace* is a tuple of labels compared element by element, as a tuple, never as a
  string prefix (LangGraph's own Postgres store leaked across tenants through an unescaped
  ``LIKE`` prefix). Labels are stored exactly: ``%``, ``_``, ``.``, ``:``, ``*``, unicode.

``GraphMethods`` is mixed into ``Backend``: public scoped methods (sync and ``a``-twins) that
fail closed on a missing scope, stamp writes and verify results, over underscored methods
each backend implements, as in ``base``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

import numpy as np

from ..errors import InvalidInput, StorageError
from ..filters import Filter
from ..scope import Scope
from .similarity import best_first, cosines, mismatch

__all__ = [
    "CheckpointQuery",
    "CheckpointRecord",
    "GraphMethods",  # noqa: F822 (made lazily by __getattr__: its module imports this one)
    "ItemQuery",
    "ItemRef",
    "MatchRule",
    "Namespace",
    "StoreItem",
    "WriteRecord",
    "check_key",
    "check_namespace",
    "decode_namespace",
    "encode_namespace",
    "expiry",
    "namespace_matches",
    "rank_items",
]


Namespace: TypeAlias = "tuple[str, ...]"
ItemRef: TypeAlias = "tuple[tuple[str, ...], str]"
WILDCARD = "*"


@dataclass(frozen=True)
class WriteRecord:
    """One pending write of a task, attached to a checkpoint of a thread."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    type: str
    value: bytes
    task_path: str = ""
    scope: Scope | None = None


@dataclass(frozen=True)
class CheckpointRecord:
    """A serialized checkpoint of a thread, its JSON metadata, and (when read) its writes."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    type: str
    checkpoint: bytes
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    scope: Scope | None = None
    writes: tuple[WriteRecord, ...] = ()


@dataclass(frozen=True)
class CheckpointQuery:
    """Which checkpoints to read, newest first. ``thread_id=None`` means all of the user's."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    before: str | None = None
    filter: Filter | None = None
    limit: int | None = None


@dataclass(frozen=True)
class StoreItem:
    """A JSON value under (namespace, key); ``embeddings`` maps an indexed field to a vector.

    ``ttl`` is in minutes (LangGraph's unit); ``expires_at`` is when it lapses unless read
    or written again.
    """

    namespace: Namespace
    key: str
    value: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    ttl: float | None = None
    embeddings: dict[str, list[float]] | None = None
    scope: Scope | None = None


@dataclass(frozen=True)
class MatchRule:
    """A namespace pattern: ``prefix`` or ``suffix``, where a ``*`` label matches any label."""

    kind: Literal["prefix", "suffix"]
    path: Namespace


@dataclass(frozen=True)
class ItemQuery:
    """Store items under namespace ``prefix`` whose value matches ``filter``.

    Without ``vectors`` the storage orders them newest first and applies ``limit`` and
    ``offset``; with ``vectors`` it returns every match with its embeddings, for ranking.
    """

    prefix: Namespace = ()
    filter: Filter | None = None
    limit: int | None = None
    offset: int = 0
    vectors: bool = False


# -- pure helpers, shared by every backend --------------------------------------------------


def check_namespace(namespace: Iterable[object], *, empty: bool = False) -> Namespace:
    """A namespace as a tuple of non-empty labels a database can store, unchanged.

    No normalization: a label is kept and compared exactly as given.
    """
    labels = tuple(namespace)
    if not labels and not empty:
        raise InvalidInput("a namespace needs at least one label", field="namespace")
    for label in labels:
        _check_text(label, "namespace label", "namespace")
    return labels  # type: ignore[return-value]


def check_key(key: object) -> str:
    _check_text(key, "store key", "key")
    assert isinstance(key, str)
    return key


def _check_text(value: object, what: str, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"a {what} must be a non-empty string", field=field)
    if "\x00" in value:
        raise InvalidInput(f"a {what} must not contain NUL", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text, no database stores them
        raise InvalidInput(f"a {what} must be valid Unicode", field=field) from None


def expiry(now: datetime, ttl: float | None) -> datetime | None:
    """When an item with ``ttl`` minutes lapses if touched at ``now``."""
    return None if ttl is None else now + timedelta(minutes=ttl)


def encode_namespace(namespace: Namespace) -> str:
    """The stored form: a JSON array, one-to-one with the tuple, so equality is exact."""
    return json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":"))


def decode_namespace(text: str) -> Namespace:
    """The tuple of a stored namespace; what no write of ours stores is a ``StorageError``."""
    try:
        labels = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StorageError("a stored namespace is not JSON") from exc
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise StorageError("a stored namespace is not a list of labels")
    return tuple(labels)


def namespace_matches(namespace: Namespace, rule: MatchRule) -> bool:
    """Element-wise equality of the rule's labels with the namespace's first or last ones."""
    n = len(rule.path)
    if len(namespace) < n:
        return False
    part = namespace[:n] if rule.kind == "prefix" else namespace[len(namespace) - n :]
    return all(p in (WILDCARD, label) for p, label in zip(rule.path, part, strict=True))


def rank_items(
    items: Sequence[StoreItem], query: Sequence[float], limit: int, offset: int
) -> list[tuple[StoreItem, float | None]]:
    """Best first by cosine similarity, an item scoring its best field; then unscored items.

    Exact over the caller's own matching items, so it always gives ``min(limit, matches)``
    after ``offset``. Items without embeddings fill the page after every scored one, as
    LangGraph's stores do.
    """
    scored = [item for item in items if item.embeddings]
    vectors = [v for item in scored for v in (item.embeddings or {}).values()]
    for vector in vectors:
        if len(vector) != len(query):
            raise mismatch(len(vector), len(query))
    ranked: list[tuple[StoreItem, float | None]] = []
    if vectors:  # each item scores its best field: a max over its run of rows
        starts = np.cumsum([0, *(len(item.embeddings or {}) for item in scored[:-1])])
        scores = cosines(query, np.asarray(vectors, dtype=np.float64))
        per_item = np.maximum.reduceat(scores, starts)
        best = best_first(per_item, offset + limit, lambda i: (scored[i].namespace, scored[i].key))
        ranked = [(scored[i], float(per_item[i])) for i in best]
    ranked += [(item, None) for item in items if not item.embeddings]
    return ranked[offset : offset + limit]


def __getattr__(name: str) -> Any:
    if name == "GraphMethods":  # its home is the operations module, which imports this one
        from ._graph_operations import GraphMethods

        return GraphMethods
    raise AttributeError(name)
