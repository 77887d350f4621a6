"""LlamaIndex ``MetadataFilters`` -> the core filter dialect, and a guard for SQL-pasting stores.

``to_filter`` compiles a filter tree (nested groups, ``and``/``or``/``not``) to the dict
dialect of ``muxi_isolation.filters``, which every backend compiles to bound parameters:

    EQ NE GT GTE LT LTE   $eq $ne $gt $gte $lt $lte
    IN NIN                $in $nin (a scalar value counts as a one-item list)
    ANY ALL CONTAINS      $any $all $contains (on list values)
    TEXT_MATCH            $text (case-sensitive substring)
    IS_EMPTY              the key is missing, null or ""
    condition NOT         none of the group's filters match (LlamaIndex's meaning)

``TEXT_MATCH_INSENSITIVE`` has no equivalent in the dialect and raises ``InvalidFilter``, as
does an empty nested group; the core's semantics apply (a comparison on a missing key is
false, ``IS_EMPTY`` does not match an empty list).

``check_pasteable`` refuses keys and values that a store which pastes filters into SQL text
(llama-index's ``PGVectorStore``) could not quote safely, and values it would paste as a
bare number it cannot compare (``"nan"``, ``"inf"``, ``1e400``) or could not paste at all (a
list under a one-value operator, one value under ``IN``).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from muxi_isolation import policy
from muxi_isolation.errors import InvalidFilter
from muxi_isolation.filters import parse_filter

from ._nodes import SESSION_ALIAS

__all__ = [
    "UNSAFE_CHARACTERS",
    "check_delete_filters",
    "check_pasteable",
    "pasteable",
    "to_filter",
]

_SIMPLE = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.CONTAINS: "$contains",
    FilterOperator.TEXT_MATCH: "$text",
}
_LISTS = {
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$any",
    FilterOperator.ALL: "$all",
}
# PGVectorStore quotes each item of these lists; any other value is pasted alone, and
# outside CONTAINS and TEXT_MATCH as a bare number when ``float()`` accepts it.
_PASTED_LISTS = frozenset(
    {FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL}
)
_PASTED_QUOTED = frozenset(
    {FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE}
)
# A quote ends the SQL literal, a backslash escapes, a colon can start a SQLAlchemy bind
# parameter inside text(), a double quote breaks the JSON that CONTAINS builds.
UNSAFE_CHARACTERS = frozenset("'\"\\:")


def to_filter(
    filters: MetadataFilters | None, rename: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The dialect dict for a LlamaIndex filter tree; ``None`` (or no filters) is no filter.

    ``rename`` maps a caller's key to the key it is stored under.
    """
    if filters is None or not filters.filters:
        return None
    spec = _group(filters, rename or {})
    parse_filter(spec)  # validate now, with the caller's names in the message
    return spec


def check_delete_filters(filters: MetadataFilters | None) -> None:
    """Refuse delete filters that select everything (no filters, an empty group, a tree that
    is always true); ``None`` is no filter, and then the caller's ids decide."""
    if filters is None:
        return
    if _has_empty_group(filters):
        raise InvalidFilter("a delete filter must select something: it has an empty group")
    try:
        spec = to_filter(filters, SESSION_ALIAS)
    except InvalidFilter:
        return  # an operator only the wrapped store knows: its own meaning applies
    policy.delete_filter(spec)


def _has_empty_group(group: MetadataFilters) -> bool:
    return not group.filters or any(
        _has_empty_group(f) for f in group.filters if isinstance(f, MetadataFilters)
    )


def _group(group: MetadataFilters, rename: Mapping[str, str]) -> dict[str, Any]:
    if not group.filters:
        raise InvalidFilter("an empty nested MetadataFilters group has no meaning")
    items = [
        _group(f, rename) if isinstance(f, MetadataFilters) else _compare(f, rename)
        for f in group.filters
    ]
    condition = group.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return {"$not": items[0] if len(items) == 1 else {"$or": items}}
    if len(items) == 1:
        return items[0]
    return {"$or": items} if condition == FilterCondition.OR else {"$and": items}


def _compare(f: MetadataFilter, rename: Mapping[str, str]) -> dict[str, Any]:
    op, key, value = f.operator, rename.get(f.key, f.key), f.value
    if op in _SIMPLE:
        return {key: {_SIMPLE[op]: value}}
    if op in _LISTS:
        return {key: {_LISTS[op]: value if isinstance(value, list) else [value]}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: {"$eq": None}}, {key: {"$eq": ""}}]}
    raise InvalidFilter(f"filter operator {op.value!r} is not supported")


def pasteable(value: object) -> bool:
    """Whether a string survives being pasted between single quotes in SQL text."""
    return isinstance(value, str) and not any(
        ch in UNSAFE_CHARACTERS or unicodedata.category(ch) == "Cc" for ch in value
    )


def check_pasteable(filters: MetadataFilters | None, store: str) -> None:
    """Refuse any key or value ``store`` would paste into SQL unsafely, or fail on."""
    if filters is None:
        return
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            check_pasteable(f, store)
            continue
        if not pasteable(f.key):
            raise InvalidFilter(f"{store} pastes filter keys into SQL; refused key {f.key!r}")
        for value in _pasted_values(f, store):
            if isinstance(value, str) and not pasteable(value):
                raise InvalidFilter(
                    f"{store} pastes filter values into SQL; refused value {value!r} "
                    f"for key {f.key!r} (it holds a quote, backslash, colon or control "
                    "character)"
                )


def _pasted_values(f: MetadataFilter, store: str) -> list[Any]:
    """The values of ``f`` as PGVectorStore pastes them, refusing shapes it cannot paste."""
    op = f.operator
    if op == FilterOperator.IS_EMPTY:
        return []
    if op in _PASTED_LISTS:
        if not isinstance(f.value, list):
            raise InvalidFilter(f"{store} needs a list for {op.value!r} on key {f.key!r}")
        return list(f.value)
    if isinstance(f.value, list):  # its repr would be pasted, quotes and all
        raise InvalidFilter(f"{store} takes one value for {op.value!r} on key {f.key!r}")
    if op not in _PASTED_QUOTED and not _pastes_as_number(f.value):
        raise InvalidFilter(
            f"{store} would paste {f.value!r} for key {f.key!r} as a bare number it cannot "
            "compare (NaN, infinity, out of range or null)"
        )
    return [f.value]


def _pastes_as_number(value: object) -> bool:
    """PGVectorStore pastes ``float(value)`` unquoted when it parses, else a quoted string."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        return True  # pasted as a string, checked as one
    except (TypeError, OverflowError):
        return False
    return math.isfinite(number)
