"""The server's OpenAPI document: data in ``openapi.yaml``, with the few values the code
decides filled in here, so the document cannot drift from the checks it describes."""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

import yaml  # type: ignore[import-untyped]

from . import audit, policy
from ._audit_edge import AUDIT_LIMIT
from ._requests import BODY_SCOPE_FIELDS

__all__ = ["ID_PATTERN", "USER_PATTERN", "openapi_document", "openapi_json"]

# What ``canonical_id`` accepts, as patterns both JSON Schema (ECMA-262) and Python read the
# same way: no control character (Cc) or line/paragraph separator, no whitespace at either
# end (``str.strip``'s whitespace, spelled out: ECMA's ``\s`` is not Python's), 1-255 long.
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_SPACE = r"\x20\xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
_WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _id_pattern(exclude: str = "") -> str:
    edge, inner = f"[^{_CONTROL}{_SPACE}{exclude}]", f"[^{_CONTROL}{exclude}]"
    return f"{edge}(?:{inner}{{0,253}}{edge})?"


ID_PATTERN = f"^{_id_pattern()}$"
# tenant:user split at the first ':' (a tenant never holds one), or a default-tenant user.
USER_PATTERN = f"^{_id_pattern(':')}(?::{_id_pattern()})?$"


def _values() -> dict[str, Any]:
    """What ``!value NAME`` and ``{NAME}`` in ``!format`` stand for in the YAML."""
    return {
        "ID_PATTERN": ID_PATTERN,
        "USER_PATTERN": USER_PATTERN,
        "WHITESPACE": _WHITESPACE,
        "AUDIT_OUTCOMES": list(audit.OUTCOMES),
        "AUDIT_LIMIT": AUDIT_LIMIT,
        "RESERVED_KEYS": sorted(policy.RESERVED_KEYS),
        "BODY_SCOPE_FIELDS": sorted(BODY_SCOPE_FIELDS),
    }


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.safe_load`` plus the two tags; an unknown name is a ``KeyError`` at load."""


def _value(loader: _Loader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return copy.deepcopy(_values()[loader.construct_scalar(node)])


def _format(loader: _Loader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node)).format_map(_values())


_Loader.add_constructor("!value", _value)
_Loader.add_constructor("!format", _format)


@functools.cache
def _document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    return document


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this server, exact enough for a fuzzer: every request
    it allows is accepted, every one it forbids refused, every status it can answer listed
    (``tests/test_http_contract.py`` runs Schemathesis against the live server)."""
    return copy.deepcopy(_document())  # a fresh copy: a caller may change theirs


@functools.cache
def openapi_json() -> bytes:
    """The document as the public ``GET /openapi.json`` serves it, rendered once: the same
    bytes Starlette's ``JSONResponse`` would render, without a copy per request."""
    text = json.dumps(_document(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")
