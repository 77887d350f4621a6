"""The policy for stores we do not own: the scope travels in each record's metadata and id.

One set of rules, used by every wrapper of a foreign store (LangChain's and LlamaIndex's
``ScopedVectorStore``, LlamaIndex's ``ScopedRetriever``) and by the importers that read
what those wrappers wrote:

- ``stamp``: the caller's metadata plus the scope's reserved keys (a caller's own reserved
  key is ``ReservedKey``);
- ``unstamp`` / ``split_stamp``: the metadata without those keys;
- ``owned``: whether a returned record carries the scope's stamp; anything else is dropped,
  logged by ``muxi_isolation.policy`` and audited, as ``policy.verify`` does for our stores;
- ``claim``: an importer's ``unstamp`` that refuses a stamp for another owner;
- ``refuse_filter_keys``: a caller's filter may not name a scope or reserved key;
- per-user ids: a caller's id ``"1"`` is stored as ``muxi:<hash of tenant and user>:1``
  (``stored_id``), so users' ids never collide in a shared table; ``refuse_taken`` refuses
  a write whose ids already hold a record stamped for someone else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ScopeViolation
from .policy import (
    FORBIDDEN_FILTER_KEYS,
    RESERVED_KEYS,
    caller_id,
    dropped,
    foreign_id,
    foreign_id_prefix,
    stamp_metadata,
    verify_metadata,
)
from .policy import refuse_scope_keys as refuse_filter_keys
from .scope import Scope

__all__ = [
    "FORBIDDEN_FILTER_KEYS",
    "RESERVED_KEYS",
    "caller_id",
    "claim",
    "dropped",
    "foreign_id_prefix",
    "own_id",
    "owned",
    "refuse_filter_keys",
    "refuse_taken",
    "split_stamp",
    "stamp",
    "stored_id",
    "unstamp",
]

stamp = stamp_metadata
stored_id = foreign_id


def unstamp(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``metadata`` without the reserved stamp keys."""
    return {k: v for k, v in (metadata or {}).items() if k not in RESERVED_KEYS}


def split_stamp(metadata: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metadata`` without its stamp, and the stamp."""
    data = dict(metadata or {})
    return unstamp(data), {k: v for k, v in data.items() if k in RESERVED_KEYS}


def owned(
    scope: Scope,
    metadata: Mapping[str, Any] | None,
    *,
    what: str,
    source: str,
    target: str | None = None,
    level: int = logging.ERROR,
) -> bool:
    """Whether a record a foreign store returned carries ``scope``'s stamp; when it does
    not, it is reported (``policy.dropped``) and the caller drops it."""
    if verify_metadata(scope, metadata):
        return True
    dropped(scope, what, source, target, level)
    return False


def claim(owner: Scope, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """An imported record's metadata without the stamp a wrapper left on it; a stamp for
    someone else than ``owner`` is refused, never carried over."""
    rest, stamps = split_stamp(metadata)
    if stamps and not verify_metadata(owner, metadata):
        raise ScopeViolation("the source stamps this record for another owner")
    return rest


def own_id(scope: Scope, stored: str) -> str:
    """The caller's id for an id stored in ``scope``'s namespace; any other id as it is."""
    own = caller_id(scope, stored)
    return stored if own is None else own


def refuse_taken(scope: Scope, metadata: Iterable[Mapping[str, Any] | None]) -> None:
    """A write may not land on an id that holds a record not stamped for ``scope``."""
    if not all(verify_metadata(scope, md) for md in metadata):
        raise ScopeViolation("an id in this write holds a record not stamped for this scope")
