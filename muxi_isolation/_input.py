"""Checks on input values, shared by every entry point and every backend.

What one backend cannot hold is refused on all of them, before anything is written or
read, with ``InvalidInput`` naming the field: PostgreSQL cannot store a NUL in text or
JSON, no database driver encodes a lone surrogate, SQLite's integers stop at 64 bits,
and JSON has no NaN. So the same input gets the same answer on memory, SQLite and
PostgreSQL, instead of a driver error on one and success on another.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInput

__all__ = ["INT64_MAX", "INT64_MIN", "check_int", "check_json", "check_text", "text_problem"]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def text_problem(value: str) -> str | None:
    """Why no backend can store ``value`` as text, or ``None`` if every backend can."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def check_text(value: object, field: str) -> str:
    """``value`` if it is a string every backend can store; ``InvalidInput`` otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}", field=field)
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}", field=field)
    return value


def check_int(value: object, field: str, *, minimum: int = INT64_MIN) -> int:
    """``value`` if it is an integer (not a bool) from ``minimum`` to 2**63-1."""
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INT64_MAX:
        span = "a non-negative integer" if minimum == 0 else f"an integer from {minimum}"
        raise InvalidInput(f"{field} must be {span} up to {INT64_MAX}", field=field)
    return value


# ``json.dumps`` with options builds an encoder per call: most of a small message's check.
_STRICT = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def check_json(value: Any, field: str) -> None:
    """Refuse what not every backend stores alike: non-JSON values, NaN or infinity, and
    strings (values or keys, at any depth) that ``text_problem`` refuses."""
    try:
        dumped = _STRICT.encode(value)
    except RecursionError:
        raise InvalidInput(f"{field} is nested too deeply", field=field) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{field} must be JSON (no NaN or infinity): {exc}", field=field
        ) from exc
    # Every string (key or value) is in ``dumped`` as it was, but for escapes: a NUL shows as
    # \u0000 and a lone surrogate stays and does not encode. Neither there: nothing to refuse,
    # without walking the tree (a literal "\\u0000" only sends it down the exact walk).
    if "\\u0000" not in dumped:
        try:
            dumped.encode("utf-8")
            return
        except UnicodeEncodeError:
            pass
    stack = [value]
    while stack:  # json.dumps accepted it: a finite tree of dicts, lists, tuples and scalars
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise InvalidInput(f"{field}: a string {problem}", field=field)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
