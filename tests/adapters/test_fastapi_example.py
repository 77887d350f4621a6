"""examples/fastapi_app.py runs as a new user runs it: the middleware and ``Depends(get_scope)``
keep two users and two tenants apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"


def test_the_fastapi_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bob's notes:   []" in done.stdout
    assert "bob reading alice's session: 404 session_not_found" in done.stdout
    assert "a tenant_a key acting for tenant_b: 403 forbidden" in done.stdout
