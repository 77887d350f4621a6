"""The migration examples run as a new user would run them, and their checks hold."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _examples import EXAMPLES, run_python


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(*args, cwd=cwd)


@pytest.mark.parametrize("url", [None, "memory://"], ids=["default-sqlite", "memory"])
def test_between_frameworks(url: str | None, tmp_path: Path) -> None:
    done = run(
        str(EXAMPLES / "migrate_between_frameworks.py"), *([url] if url else []), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "isolation held" in done.stdout and "LEAKED" not in done.stdout
    assert "{'channel': 'web'}" in done.stdout  # LangChain kwargs reach LlamaIndex


def test_lifecycle(tmp_path: Path) -> None:
    done = run(str(EXAMPLES / "migrate_lifecycle.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nothing written" in done.stdout  # the rerun
    assert "forgot user tenant_a:ann: 1 sessions, 2 messages" in done.stdout
    assert done.stdout.strip().endswith("lifecycle done: imported, exported, forgotten, purged")
