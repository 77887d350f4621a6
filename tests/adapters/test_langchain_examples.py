"""The LangChain examples run as a new user would run them, and their checks hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from _examples import EXAMPLES, run_python


@pytest.mark.parametrize("name", ["langchain_chat.py", "langchain_rag.py"])
@pytest.mark.parametrize("url", [None, "memory://"], ids=["default-sqlite", "memory"])
def test_example_runs(name: str, url: str | None, tmp_path: Path) -> None:
    done = run_python(str(EXAMPLES / name), *([url] if url else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "isolation held" in done.stdout
    assert "LEAKED" not in done.stdout
