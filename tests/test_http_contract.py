"""The HTTP contract: ``/openapi.json`` describes exactly what the server does.

Schemathesis fuzzes the real server (uvicorn on 127.0.0.1, the embedded SQLite default)
from its own document, as a user would run it (``schemathesis run <server>/openapi.json``),
with every check on: each response code must be documented, each request the document
allows must be accepted and each one it forbids refused, a wrong method must be 405 with an
``Allow`` header naming exactly the documented methods, responses must match their schemas.
One run acts as a tenant-bound client key with a user header on the user routes, one as an
admin key on the admin routes. A fixed seed keeps CI reproducible; the example count keeps
the two runs under ~30 s together.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from muxi_isolation import Isolation, KeyRing
from muxi_isolation.server import create_app, serve_in_thread
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
        with serve_in_thread(create_app(isolation, keys)) as url:
            yield url
    finally:
        backend.close()


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
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180)
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
