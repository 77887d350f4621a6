"""The README (and every docs/ page) as a reader meets it: each Python block runs as written.

Each ```python block runs in a fresh interpreter in an empty temporary directory; any
exception fails the test, with the block's output. A block that needs PostgreSQL says so by
reading ``MUXI_POSTGRES_URL``, which is set here to a fresh database of the suite's server
(``postgres_urls``). The README's first block is the two commands CI runs, and every
relative link between README.md, SECURITY.md and docs/ leads to a file and heading that
exist.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _examples import user_env
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, ROOT / "SECURITY.md", *DOCS]
# A fenced block, possibly indented (inside a list item): its language and its body.
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)
POSTGRES_VAR = "MUXI_POSTGRES_URL"


def python_blocks(page: Path) -> list[tuple[str, str | None]]:
    """Each Python block, with the ```output block that follows it (its exact stdout), if any."""
    text_ = page.read_text()
    fences = list(FENCE.finditer(text_))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group(2) != "python":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        output = None
        if after is not None and after.group(2) == "output":
            output = textwrap.dedent(after.group(3))
        blocks.append((textwrap.dedent(fence.group(3)), output))
    return blocks


BLOCKS = {
    f"{page.relative_to(ROOT)}#{n}": block
    for page in [README, *DOCS]
    for n, block in enumerate(python_blocks(page), 1)
}


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database (so a block may create tables and revoke TEMPORARY freely)."""
    admin = make_url(request.getfixturevalue("postgres_urls").admin)
    name = f"readme_{secrets.token_hex(4)}"
    engine = create_engine(
        admin.set(drivername="postgresql+psycopg"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = 'muxi_app'")).first():
            conn.execute(text("DROP ROLE muxi_app"))
    engine.dispose()


# Both PostgreSQL blocks create the role ``muxi_app``: they run one after the other, in one
# test; every other block is a test of its own, so xdist spreads them over its workers.
POSTGRES_BLOCKS = [name for name, (code, _) in BLOCKS.items() if POSTGRES_VAR in code]


def run_block(name: str, cwd: Path, postgres_url: str | None = None) -> None:
    """Runs the block in a fresh interpreter in ``cwd``; checks it succeeds and prints its
    ```output block, if it has one."""
    code, output = BLOCKS[name]
    env = user_env() if postgres_url is None else user_env(**{POSTGRES_VAR: postgres_url})
    cwd.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"{code}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
    if output is not None:
        assert run.stdout == output, "the page's ```output block is what the code prints"


@pytest.mark.parametrize("name", [name for name in BLOCKS if name not in POSTGRES_BLOCKS])
def test_python_block_runs_as_written(name: str, tmp_path: Path) -> None:
    run_block(name, tmp_path / "block")


def test_postgres_blocks_run_as_written(postgres_database: str, tmp_path: Path) -> None:
    assert POSTGRES_BLOCKS, "the README shows the PostgreSQL deployment"
    for i, name in enumerate(POSTGRES_BLOCKS):
        run_block(name, tmp_path / f"block{i}", postgres_database)


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    text_ = README.read_text()
    first = FENCE.search(text_)
    assert first is not None and first.group(2) == "bash"
    assert text_.count("```bash") == 1, "exactly one bash block: the two commands"
    demo, tests = first.group(3).strip().splitlines()
    assert demo == "pip install -e '.[server]' && muxi-isolation demo"
    assert tests.startswith("pip install -e '.[all,test]' && pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, ".ci/run runs the README's test command verbatim"


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#{1,6} +(.+?) *$", body, re.M)}


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"
