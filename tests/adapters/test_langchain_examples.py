"""The LangChain examples run as a new user would run them, and their checks hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["langchain_chat.py", "langchain_rag.py"])
@pytest.mark.parametrize("url", [None, "memory://"], ids=["default-sqlite", "memory"])
def test_example_runs(name: str, url: str | None, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *([url] if url else [])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "isolation held" in done.stdout
    assert "LEAKED" not in done.stdout
