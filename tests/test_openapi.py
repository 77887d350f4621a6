"""The OpenAPI document is data (``muxi_isolation/openapi.yaml``) with the values the code
decides filled in by ``muxi_isolation._openapi``: those values are the live ones, and the
file ships in the wheel. (Every route of ``create_app`` is documented and nothing else:
``tests/test_server.py::test_openapi_documents_every_route_and_is_public``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.responses import JSONResponse

from muxi_isolation import Isolation, KeyRing, audit, policy
from muxi_isolation._audit_edge import AUDIT_LIMIT
from muxi_isolation._openapi import ID_PATTERN, USER_PATTERN, openapi_document
from muxi_isolation._requests import BODY_SCOPE_FIELDS
from muxi_isolation.server import create_app

ROOT = Path(__file__).resolve().parents[1]
NO_NUL = r"^[^\x00]*$"


def schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in the document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas(value)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_every_id_in_the_document_has_the_live_pattern() -> None:
    found: dict[int, set[str]] = {}
    for schema in schemas(openapi_document()):
        if "pattern" in schema and "maxLength" in schema:
            found.setdefault(schema["maxLength"], set()).add(schema["pattern"])
    # ids (session, tenant, idempotency key) and users (tenant:user): nothing else
    assert found == {255: {ID_PATTERN}, 511: {USER_PATTERN}}


def test_the_values_the_code_decides_are_filled_in() -> None:
    document = openapi_document()
    params = {p["name"]: p for p in document["paths"]["/v1/admin/audit"]["get"]["parameters"]}
    assert params["outcome"]["schema"]["enum"] == list(audit.OUTCOMES)
    assert params["limit"]["schema"]["maximum"] == AUDIT_LIMIT
    assert params["limit"]["description"].endswith(f"(default {AUDIT_LIMIT})")
    chat = document["components"]["schemas"]["ChatRequest"]
    reserved = chat["properties"]["metadata"]["propertyNames"]["not"]["enum"]
    assert reserved == sorted(policy.RESERVED_KEYS)
    assert chat["propertyNames"]["not"]["enum"] == sorted(BODY_SCOPE_FIELDS)
    left = [s for s in strings(document) if re.search(r"\{[A-Z_]+\}|!value|!format", s)]
    assert left == []  # no tag or placeholder of the YAML is left unfilled


def test_a_message_is_blank_exactly_when_str_strip_says_so() -> None:
    """The whitespace spelled out in the YAML's pattern is ``str.strip``'s, character by
    character (the server refuses a blank message with ``text.strip()``)."""
    pattern = openapi_document()["components"]["schemas"]["ChatRequest"]["properties"]
    pattern = pattern["message"]["pattern"]
    for code in range(1, 0x3100):
        text = f" {chr(code)} "
        assert bool(re.fullmatch(pattern, text)) == bool(text.strip()), hex(code)
    assert re.fullmatch(pattern, "a\x00") is None


def test_each_call_gets_its_own_copy() -> None:
    first = openapi_document()
    first["paths"].clear()
    first["components"]["schemas"]["Error"]["required"].append("changed")
    again = openapi_document()
    assert "/v1/chat" in again["paths"]
    assert again["components"]["schemas"]["Error"]["required"] == ["error", "message"]


async def test_the_route_serves_what_json_response_would_render() -> None:
    """``GET /openapi.json`` serves bytes rendered once; they are the document as
    ``JSONResponse`` renders it, with its content type."""
    app = create_app(Isolation(), KeyRing())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        for _ in range(2):
            response = await client.get("/openapi.json")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == JSONResponse(openapi_document()).body
