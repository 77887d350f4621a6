"""The HTTP contract: ``/openapi.json`` describes exactly what the server does.

Schemathesis fuzzes the real server (uvicorn on 127.0.0.1, the embedded SQLite default)
from its own document, as a user would run it (``schemathesis run <server>/openapi.json``),
with every check on: each response code must be documented, each request the document
allows must be accepted and each one it forbids refused, a wrong method must be 405 with an
``Allow`` header naming exactly the documented methods, responses must match their schemas.
One run acts as a tenant-bound client key with a user header on the user routes, one as an
admin key on the admin routes. The fuzzer reuses header values across unrelated requests,
which a real client never does with an ``Idempotency-Key`` (one key per logical request,
retries included); so the fuzzed server sees each request's key made unique, and replays
are tested where they belong (tests/test_server.py, tests/security/test_outages.py).
A fixed seed keeps CI reproducible; the example count keeps the two runs under ~30 s.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _examples import user_env

from muxi_isolation import Isolation, KeyRing, Scope
from muxi_isolation.errors import InvalidIdentifier
from muxi_isolation.scope import canonical_id
from muxi_isolation.server import (
    ID_PATTERN,
    USER_PATTERN,
    create_app,
    openapi_document,
    serve_in_thread,
)
from muxi_isolation.stores import open_backend

CLIENT_KEY = "fmc_contract_tenant_a"
ADMIN_KEY = "fma_contract_admin"
EXAMPLES = "12"
SEED = "20250108"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    keys = KeyRing()
    keys.add_client_key("tenant_a", CLIENT_KEY)
    keys.add_admin_key(ADMIN_KEY)
    backend = open_backend(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'muxi.db'}")
    isolation = Isolation(backend)
    try:
        with serve_in_thread(_fresh_keys(create_app(isolation, keys))) as url:
            yield url
    finally:
        backend.close()


def _fresh_keys(app: Any) -> Any:
    """The app, with each request's valid Idempotency-Key made its own (a key the server
    would refuse is passed on as it is, so the refusal is still checked)."""
    count = itertools.count()

    def fresh(value: bytes) -> bytes:
        try:
            key = canonical_id(value.decode(), "idempotency_key")
        except (InvalidIdentifier, UnicodeDecodeError):
            return value
        return f"{key[:240]}.{next(count)}".encode()

    async def fresh_keys(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [
                (name, fresh(value) if name.lower() == b"idempotency-key" else value)
                for name, value in scope["headers"]
            ]
            scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return fresh_keys


def schemathesis(url: str, cwd: Path, *options: str) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks=all",
        f"--max-examples={EXAMPLES}",
        f"--seed={SEED}",
        "--generation-database=none",
        "--workers=1",
        "--no-color",
        "--output-sanitize=false",
        *options,
    ]
    # user_env: the fuzzer's own process runs none of our code, so coverage stays out of it
    run = subprocess.run(
        command, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=180
    )
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "Tested: " in run.stdout and " passed" in run.stdout, report


def test_user_routes_match_the_document_for_a_client_key(server: str, tmp_path: Path) -> None:
    schemathesis(
        server,
        tmp_path,
        f"--header=X-Muxi-Client-Key: {CLIENT_KEY}",
        "--header=X-Muxi-User-Id: tenant_a:user_1",
        "--exclude-path-regex=^/v1/admin/",
    )


def test_admin_routes_match_the_document_for_an_admin_key(server: str, tmp_path: Path) -> None:
    schemathesis(
        server,
        tmp_path,
        f"--header=X-Muxi-Client-Key: {ADMIN_KEY}",
        "--include-path-regex=^/v1/admin/",
    )


# -- the document's id patterns are the server's id rules, on the hostile id table ------------

HOSTILE = json.loads((Path(__file__).parent / "security" / "hostile_ids.json").read_text())
# The patterns describe ids as a client sends them in UTF-8 (no lone surrogate, which UTF-8
# cannot carry) and in NFC: the server normalizes first, and a pattern cannot.
IDS = [
    value
    for value in [case["id"] for case in HOSTILE["ids"]] + ["a" * 255, "a" * 256, " a", "a\u3000"]
    if not any(0xD800 <= ord(c) < 0xE000 for c in value)
    if unicodedata.normalize("NFC", value) == value
]


def accepted(parse: Callable[[str], object], value: str) -> bool:
    try:
        parse(value)
    except InvalidIdentifier:
        return False
    return True


@pytest.mark.parametrize("value", IDS, ids=[f"id{i}" for i in range(len(IDS))])
def test_the_id_patterns_accept_exactly_what_the_server_accepts(value: str) -> None:
    assert bool(re.fullmatch(ID_PATTERN, value)) == accepted(canonical_id, value)
    for header in (value, f"tenant_a:{value}", f"{value}:user_1"):
        assert bool(re.fullmatch(USER_PATTERN, header)) == accepted(Scope.parse, header)


# -- methods: 405 names every method of the path --------------------------------------------


CLIENT = {"X-Muxi-Client-Key": CLIENT_KEY, "X-Muxi-User-Id": "tenant_a:user_1"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    keys = KeyRing()
    keys.add_client_key("tenant_a", CLIENT_KEY)
    keys.add_admin_key(ADMIN_KEY)
    with serve_in_thread(create_app(Isolation(), keys)) as url, httpx.Client(base_url=url) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/sessions", "GET, HEAD, POST"),
        ("PUT", "/v1/sessions/sess_1", "DELETE, GET, HEAD"),
        ("PATCH", "/v1/chat", "POST"),
        ("POST", "/v1/admin/users/tenant_a:user_1", "DELETE"),
        ("DELETE", "/v1/admin/users/tenant_a:user_1/export", "GET, HEAD"),
    ],
)
def test_a_wrong_method_is_405_naming_every_method_of_the_path(
    http: httpx.Client, method: str, path: str, allow: str
) -> None:
    admin = path.startswith("/v1/admin/")
    headers = {"X-Muxi-Client-Key": ADMIN_KEY} if admin else CLIENT
    response = http.request(method, path, headers=headers)
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")
    assert response.headers["allow"] == allow


def test_delete_on_the_export_url_forgets_nobody(http: httpx.Client) -> None:
    client = {"X-Muxi-Client-Key": CLIENT_KEY, "X-Muxi-User-Id": "tenant_a:u/export"}
    assert http.post("/v1/sessions", headers=client).status_code == 201
    admin = {"X-Muxi-Client-Key": ADMIN_KEY}
    assert http.delete("/v1/admin/users/tenant_a:u/export", headers=admin).status_code == 405
    assert len(http.get("/v1/sessions", headers=client).json()["sessions"]) == 1
    # the user whose id holds the '/' is forgotten through its encoded form
    forgot = http.delete("/v1/admin/users/tenant_a:u%2Fexport", headers=admin)
    assert (forgot.status_code, forgot.json()["deleted"]["sessions"]) == (200, 1)
    assert http.get("/v1/sessions", headers=client).json()["sessions"] == []


def test_null_metadata_and_session_id_are_accepted_as_documented(http: httpx.Client) -> None:
    body = {"message": "hi", "session_id": None, "metadata": None}
    assert http.post("/v1/chat", headers=CLIENT, json=body).status_code == 200
    chat = openapi_document()["components"]["schemas"]["ChatRequest"]["properties"]
    assert "null" in chat["metadata"]["type"] and "null" in chat["session_id"]["type"]
