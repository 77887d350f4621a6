"""The LlamaIndex examples run as a new user would run them, offline, and their checks hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from _examples import EXAMPLES, run_python


def run(name: str, *args: str, cwd: Path) -> str:
    done = run_python(str(EXAMPLES / name), *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def replies(out: str, user: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith(f"{user} ")]


@pytest.mark.parametrize("url", [(), ("memory://",)], ids=["sqlite", "memory"])
def test_chat_example(url: tuple[str, ...], tmp_path: Path) -> None:
    out = run("llamaindex_chat.py", *url, cwd=tmp_path)
    alice, bob = replies(out, "tenant_a:alice"), replies(out, "tenant_a:bob")
    assert len(alice) == len(bob) == 2
    assert all("Alice" in line and "jazz" in line and "Bob" not in line for line in alice)
    assert all("Bob" in line and "rock" in line and "Alice" not in line for line in bob)
    assert "from long-term memory: I like jazz.; My name is Alice." in alice[1]
    assert "archived messages" in out
    assert "SessionNotFound" in out


@pytest.mark.parametrize("url", [(), ("memory://",)], ids=["sqlite", "memory"])
def test_rag_example(url: tuple[str, ...], tmp_path: Path) -> None:
    out = run("llamaindex_rag.py", *url, cwd=tmp_path)
    alice, bob = replies(out, "tenant_a:alice"), replies(out, "tenant_a:bob")
    assert len(alice) == len(bob) == 3
    assert all("Alice's blood type" in line for line in alice)
    assert all("Bob's blood type" in line for line in bob)
    assert "alice still has ['health', 'travel']" in out
    assert "ReservedKey" in out
    assert out.count("dropped a node from outside") == 4
