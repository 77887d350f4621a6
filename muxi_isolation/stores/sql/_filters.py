"""Compile a parsed metadata filter (``filters.py``) to a SQL expression, values bound.

The semantics are exactly those of ``filters.matches``: JSON equality (``1`` equals ``1.0``,
never ``true``), ranges only number-to-number or string-to-string (strings by code point),
and a comparison on a missing key is false. SQL's NULL would turn ``NOT (missing = 1)``
into NULL, so every comparison is made two-valued (``coalesce(..., false)``) before
``AND``/``OR``/``NOT`` combine them. Substring tests use ``instr``/``strpos``, never
``LIKE``, so ``%`` and ``_`` in a value mean themselves.

Keys reach SQL as bound parameters too: a JSON path on SQLite, a ``->`` operand on
PostgreSQL (the parser already refuses quotes, backslashes and control characters).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from ...errors import InvalidFilter
from ...filters import And, Compare, Filter, Not

__all__ = ["compile_filter"]

Cond = ColumnElement[bool]
Has = Callable[[Any], Cond]
_RANGE = {"$lt": "__lt__", "$lte": "__le__", "$gt": "__gt__", "$gte": "__ge__"}


def compile_filter(node: Filter, metadata: ColumnElement[Any], dialect: str) -> Cond:
    """A boolean expression, never NULL, true exactly where ``matches`` would be."""
    json_ops: _JSONOps = _SQLite(metadata) if dialect == "sqlite" else _Postgres(metadata)
    return _compile(node, json_ops)


def _compile(node: Filter, ops: _JSONOps) -> Cond:
    if isinstance(node, Compare):
        return func.coalesce(ops.compare(node), false(), type_=Boolean)
    if isinstance(node, Not):
        return not_(_compile(node.item, ops))
    parts = [_compile(item, ops) for item in node.items]
    return and_(*parts) if isinstance(node, And) else or_(*parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _any_of(conds: list[Cond]) -> Cond:
    return or_(*conds) if conds else false()


class _JSONOps:
    """One dialect's JSON primitives; ``compare`` is shared."""

    def exists(self, key: str) -> Cond:
        raise NotImplementedError

    def equals(self, key: str, want: Any) -> Cond:
        raise NotImplementedError

    def ordered(self, key: str, op: str, want: Any) -> Cond:
        raise NotImplementedError

    def substring(self, key: str, want: str) -> Cond:
        raise NotImplementedError

    def array_has(self, key: str, conds: Callable[[Has], list[Cond]]) -> Cond:
        """True when the value is an array and all of ``conds(has)`` hold, where
        ``has(w)`` tests that some element equals ``w``."""
        raise NotImplementedError

    def compare(self, node: Compare) -> Cond:
        key, op, want = node.key, node.op, node.value
        if op == "$exists":
            return self.exists(key) if want else not_(self.exists(key))
        if op == "$eq":
            return self.equals(key, want)
        if op == "$ne":
            return and_(self.exists(key), not_(self._coalesced(self.equals(key, want))))
        if op == "$in":
            return _any_of([self.equals(key, w) for w in want])
        if op == "$nin":
            hit = self._coalesced(_any_of([self.equals(key, w) for w in want]))
            return and_(self.exists(key), not_(hit))
        if op in _RANGE:
            return self.ordered(key, op, want)
        if op == "$text":
            return self.substring(key, want)
        if op == "$contains":
            return self.array_has(key, lambda has: [has(want)])
        if op == "$any":
            return self.array_has(key, lambda has: [_any_of([has(w) for w in want])])
        if op == "$all":
            return self.array_has(key, lambda has: [has(w) for w in want])
        raise InvalidFilter(f"unknown operator {op!r}")

    @staticmethod
    def _coalesced(cond: Cond) -> Cond:
        return func.coalesce(cond, false(), type_=Boolean)


class _SQLite(_JSONOps):
    """``json_type``/``json_extract`` on a JSON text column; ``json_each`` for arrays."""

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def _path(self, key: str) -> Any:
        return bindparam(None, f'$."{key}"', type_=String)

    def _type(self, key: str) -> ColumnElement[str]:
        return func.json_type(self.column, self._path(key), type_=String)

    def _value(self, key: str) -> ColumnElement[Any]:
        return func.json_extract(self.column, self._path(key))

    @staticmethod
    def _eq(json_type: ColumnElement[Any], value: ColumnElement[Any], want: Any) -> Cond:
        if want is None:
            return json_type == "null"
        if isinstance(want, bool):
            return json_type == ("true" if want else "false")
        if _is_number(want):
            return and_(json_type.in_(["integer", "real"]), value == literal(want))
        return and_(json_type == "text", value == literal(want, String))

    def exists(self, key: str) -> Cond:
        return self._type(key).is_not(None)

    def equals(self, key: str, want: Any) -> Cond:
        return self._eq(self._type(key), self._value(key), want)

    def ordered(self, key: str, op: str, want: Any) -> Cond:
        kind = self._type(key)
        compared = getattr(self._value(key), _RANGE[op])(literal(want))
        if _is_number(want):
            return and_(kind.in_(["integer", "real"]), compared)
        return and_(kind == "text", compared)

    def substring(self, key: str, want: str) -> Cond:
        found = func.instr(self._value(key), literal(want, String)) > 0
        return and_(self._type(key) == "text", found)

    def array_has(self, key: str, conds: Callable[[Has], list[Cond]]) -> Cond:
        def has(want: Any) -> Cond:
            items = func.json_each(self.column, self._path(key)).table_valued("type", "value")
            match = self._eq(items.c.type, items.c.value, want)
            return exists(select(1).select_from(items).where(match))

        checks = [self._coalesced(c) for c in conds(has)]
        return and_(self._type(key) == "array", *checks)


class _Postgres(_JSONOps):
    """``jsonb`` operators with JSON-typed operands: ``->``, ``jsonb_typeof``, equality."""

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def _value(self, key: str) -> ColumnElement[Any]:
        return self.column.op("->", return_type=JSONB)(bindparam(None, key, type_=Text))

    def _text(self, key: str) -> ColumnElement[str]:
        return self.column.op("->>", return_type=Text)(bindparam(None, key, type_=Text))

    def _type(self, key: str) -> ColumnElement[str]:
        return func.jsonb_typeof(self._value(key), type_=Text)

    @staticmethod
    def _json(want: Any) -> ColumnElement[Any]:
        return cast(bindparam(None, json.dumps(want), type_=Text), JSONB)

    def exists(self, key: str) -> Cond:
        return self._value(key).is_not(None)

    def equals(self, key: str, want: Any) -> Cond:
        return self._value(key).op("=", is_comparison=True)(self._json(want))

    def ordered(self, key: str, op: str, want: Any) -> Cond:
        sql_op = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}[op]
        if _is_number(want):
            compared = self._value(key).op(sql_op, is_comparison=True)(self._json(want))
            return case((self._type(key) == "number", compared), else_=false())
        left = self._text(key).collate("C")
        compared = left.op(sql_op, is_comparison=True)(bindparam(None, want, type_=Text))
        return case((self._type(key) == "string", compared), else_=false())

    def substring(self, key: str, want: str) -> Cond:
        found = func.strpos(self._text(key), bindparam(None, want, type_=Text)) > 0
        return case((self._type(key) == "string", found), else_=false())

    def array_has(self, key: str, conds: Callable[[Has], list[Cond]]) -> Cond:
        def has(want: Any) -> Cond:
            items = func.jsonb_array_elements(self._value(key)).table_valued("value")
            match = items.c.value.op("=", is_comparison=True)(self._json(want))
            return exists(select(1).select_from(items).where(match))

        checks = [self._coalesced(c) for c in conds(has)]
        return case((self._type(key) == "array", and_(true(), *checks)), else_=false())
