"""The metadata filter dialect: a small, documented subset of MongoDB-style queries.

    {"genre": "jazz"}                         equality (same as {"genre": {"$eq": "jazz"}})
    {"year": {"$gte": 1990, "$lt": 2000}}     several operators on one key are ANDed
    {"$and": [f, ...]}, {"$or": [f, ...]}, {"$not": f}
    {"k": {"$in": [..]}}, {"k": {"$nin": [..]}}, {"k": {"$exists": true}}
    {"tags": {"$contains": "x"}}              a list value holds "x"
    {"tags": {"$any": [..]}}, {"tags": {"$all": [..]}}
    {"title": {"$text": "sub"}}              a string value holds the substring (case-sensitive)

Values are JSON scalars (string, number, boolean; ``null`` only with ``$eq``/``$ne``);
integers fit in 64 bits and strings hold no NUL or lone surrogate, on every backend.
Equality is JSON equality: ``1`` equals ``1.0`` but not ``true``. Ranges compare numbers with
numbers and strings with strings. A comparison on a missing key is false, whatever the
operator, except ``{"$exists": false}``; so ``$not`` of a comparison is true on a missing key.

Filters are parsed into a small tree; backends compile the tree (to bound SQL parameters,
never to SQL text) or evaluate it in memory with ``matches``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._input import INT64_MAX, INT64_MIN, text_problem
from .errors import InvalidFilter

__all__ = [
    "OPERATORS",
    "And",
    "Compare",
    "Filter",
    "Not",
    "Or",
    "check_filter",
    "filter_keys",
    "matches",
    "parse_filter",
]

Scalar: TypeAlias = "str | int | float | bool | None"
OPERATORS = frozenset(
    {
        "$eq",
        "$ne",
        "$lt",
        "$lte",
        "$gt",
        "$gte",
        "$in",
        "$nin",
        "$exists",
        "$contains",
        "$any",
        "$all",
        "$text",
    }
)
_LIST_OPS = {"$in", "$nin", "$any", "$all"}
_RANGE_OPS = {"$lt", "$lte", "$gt", "$gte"}
MAX_KEY_LENGTH = 128
MAX_DEPTH = 32


@dataclass(frozen=True)
class Compare:
    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    item: Filter


Filter: TypeAlias = "Compare | And | Or | Not"


def parse_filter(spec: Mapping[str, Any] | None) -> Filter | None:
    """Parse a dict filter into a tree; ``None`` or ``{}`` means no filter."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"a filter must be a dict, not {type(spec).__name__}")
    if not spec:
        return None
    return _parse(spec, 0)


def _parse(spec: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"filter nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidFilter("each filter clause must be a non-empty dict")
    parts: list[Filter] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{key} takes a non-empty list of filters")
            items = tuple(_parse(v, depth + 1) for v in value)
            parts.append(And(items) if key == "$and" else Or(items))
        elif key == "$not":
            parts.append(Not(_parse(value, depth + 1)))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidFilter(f"unknown logical operator {key!r}")
        else:
            parts.extend(_parse_field(_check_key(key), value))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def check_filter(node: Filter | None) -> Filter | None:
    """A tree built by hand (not by ``parse_filter``), held to the same rules: every key,
    operator and value is checked as the parser would, so no backend sees what it cannot
    compile or bind."""
    return None if node is None else _check_node(node, 0)


def _check_node(node: object, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"filter nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, Compare):
        if node.op not in OPERATORS:
            raise InvalidFilter(f"unknown operator {node.op!r} for key {node.key!r}")
        return Compare(_check_key(node.key), node.op, _operand(node.op, node.value))
    if isinstance(node, Not):
        return Not(_check_node(node.item, depth + 1))
    if isinstance(node, (And, Or)) and isinstance(node.items, (tuple, list)) and node.items:
        return type(node)(tuple(_check_node(item, depth + 1) for item in node.items))
    raise InvalidFilter(f"not a filter node: {type(node).__name__}")


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidFilter("a filter key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidFilter(f"a filter key must be at most {MAX_KEY_LENGTH} characters")
    if any(ch in '"\\' or unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise InvalidFilter(
            f"filter key {key!r} holds a quote, backslash, control character or lone surrogate"
        )
    return key


def _parse_field(key: str, value: Any) -> Iterator[Compare]:
    if not isinstance(value, Mapping):
        yield Compare(key, "$eq", _scalar(value, "$eq"))
        return
    if not value:
        raise InvalidFilter(f"empty operator dict for key {key!r}")
    for op, operand in value.items():
        if op not in OPERATORS:
            raise InvalidFilter(f"unknown operator {op!r} for key {key!r}")
        yield Compare(key, op, _operand(op, operand))


def _operand(op: str, operand: Any) -> Any:
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidFilter("$exists takes true or false")
        return operand
    if op in _LIST_OPS:
        if not isinstance(operand, (list, tuple)):
            raise InvalidFilter(f"{op} takes a list of values")
        return tuple(_scalar(v, op) for v in operand)
    value = _scalar(operand, op)
    if op in _RANGE_OPS and (value is None or isinstance(value, bool)):
        raise InvalidFilter(f"{op} compares numbers or strings only")
    if op == "$text" and not isinstance(value, str):
        raise InvalidFilter("$text takes a string")
    return value


def _scalar(value: Any, op: str) -> Scalar:
    if value is None:
        if op in ("$eq", "$ne"):
            return None
        raise InvalidFilter(f"{op} does not take null")
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:  # no backend could hold it, so nothing can match it
            raise InvalidFilter(f"a filter string {problem}")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:  # SQLite's integers stop at 64 bits
            raise InvalidFilter(f"filter integers must be from {INT64_MIN} to {INT64_MAX}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter("filter numbers must be finite")
        return value
    raise InvalidFilter(f"filter values must be JSON scalars, not {type(value).__name__}")


def filter_keys(node: Filter | None) -> Iterator[str]:
    """Every metadata key a filter tree names."""
    if node is None:
        return
    if isinstance(node, Compare):
        yield node.key
    elif isinstance(node, Not):
        yield from filter_keys(node.item)
    else:
        for item in node.items:
            yield from filter_keys(item)


_MISSING = object()


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    comparable = type(a) is type(b) or (_is_number(a) and _is_number(b))
    return bool(comparable and a == b)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ordered(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _compare(node: Compare, metadata: Mapping[str, Any]) -> bool:
    actual = metadata.get(node.key, _MISSING)
    op, want = node.op, node.value
    if op == "$exists":
        return bool((actual is not _MISSING) == want)
    if actual is _MISSING:
        return False
    if op == "$eq":
        return _json_equal(actual, want)
    if op == "$ne":
        return not _json_equal(actual, want)
    if op == "$in":
        return any(_json_equal(actual, w) for w in want)
    if op == "$nin":
        return not any(_json_equal(actual, w) for w in want)
    if op in _RANGE_OPS:
        if not _ordered(actual, want):
            return False
        return bool(
            {
                "$lt": actual < want,
                "$lte": actual <= want,
                "$gt": actual > want,
                "$gte": actual >= want,
            }[op]
        )
    if op == "$text":
        return isinstance(actual, str) and want in actual
    if not isinstance(actual, list):
        return False
    if op == "$contains":
        return any(_json_equal(item, want) for item in actual)
    if op == "$any":
        return any(_json_equal(item, w) for item in actual for w in want)
    # $all
    return all(any(_json_equal(item, w) for item in actual) for w in want)


def matches(node: Filter | None, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a parsed filter against one record's metadata."""
    if node is None:
        return True
    if isinstance(node, Compare):
        return _compare(node, metadata)
    if isinstance(node, Not):
        return not matches(node.item, metadata)
    if isinstance(node, And):
        return all(matches(item, metadata) for item in node.items)
    return any(matches(item, metadata) for item in node.items)
