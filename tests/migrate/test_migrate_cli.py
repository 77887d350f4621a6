"""The console commands, run as a user runs them: ``muxi-isolation import | export-user |
forget-user | forget-tenant | purge-expired``, storage from ``--config`` as ``serve`` does.

One import goes through the installed console script (a real process); the rest call the
same ``cli.main`` in this process, which is what the script runs, without paying a fresh
interpreter (about 2 s of CPU each, traced) per command."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from muxi_isolation import Memory, Message, Scope, SessionRecord, cli, load_config, server
from muxi_isolation.facade import Isolation
from muxi_isolation.migrate import Progress, export_document, open_configured_backend

SCRIPT = Path(sys.executable).parent / "muxi-isolation"
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)


def script(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``muxi-isolation`` console script, in its own process."""
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``muxi-isolation <args>`` as the script runs it (``sys.exit(cli.main())``), here."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(args))
        except SystemExit as exc:  # argparse: --help, usage errors
            status = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(
        ["muxi-isolation", *args], status, out.getvalue(), err.getvalue()
    )


def config_file(tmp_path: Path, name: str, retention: int | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    lines = [
        "memory:",
        "  persistent:",
        "    provider: sqlite",
        f"    connection_string: sqlite:///{tmp_path / name}.db",
        "    embedding_dimension: 2",
    ]
    if retention is not None:
        lines.append(f"  expired_session_retention: {retention}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def opened(path: Path) -> Any:
    return open_configured_backend(load_config(path))


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("import", ["KIND", "--map", "--dry-run", "muxi-export", "langchain-pgvector"]),
        ("export-user", ["USER", "--output", "JSON Lines"]),
        ("forget-user", ["USER", "--yes"]),
        ("forget-tenant", ["TENANT", "--yes"]),
        ("purge-expired", ["--retention", "--tenant", "expired_session_retention"]),
    ],
)
def test_every_command_has_help(command: str, words: list[str]) -> None:
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "--config" in out
    for word in words:
        assert word in out


def simple_chat_file(tmp_path: Path, keys: dict[str, list[str]]) -> Path:
    path = tmp_path / "chat_store.json"
    store = {
        k: [{"role": "user", "blocks": [{"block_type": "text", "text": t}]} for t in texts]
        for k, texts in keys.items()
    }
    path.write_text(json.dumps({"store": store, "class_name": "SimpleChatStore"}), encoding="utf-8")
    return path


def test_import_export_and_import_back(tmp_path: Path) -> None:
    source = simple_chat_file(
        tmp_path, {"tenant_a:alice:c1": ["hi", "there"], "tenant_a:bob:c1": ["bob here"]}
    )
    config = config_file(tmp_path, "first")
    template = "{tenant}:{user}:{session}"
    dry = run(
        "import",
        "llamaindex-simple-chat",
        str(source),
        "--map",
        template,
        "--config",
        str(config),
        "--dry-run",
        "--json",
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["totals"] == {"messages": 3, "sessions": 2}
    backend = opened(config)
    assert backend.list_tenants() == []
    backend.close()

    done = script(
        "import", "llamaindex-simple-chat", str(source), "--map", template, "--config", str(config)
    )
    assert done.returncode == 0, done.stderr
    assert "tenant_a:alice" in done.stdout and "errors 0" in done.stdout
    again = run(
        "import",
        "llamaindex-simple-chat",
        str(source),
        "--map",
        template,
        "--config",
        str(config),
        "--json",
    )
    assert json.loads(again.stdout)["unchanged"] == 2

    export = tmp_path / "alice.jsonl"
    exported = run("export-user", "tenant_a:alice", "-o", str(export), "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert "exported tenant_a:alice: 1 sessions, 2 messages" in exported.stderr
    to_stdout = run("export-user", "tenant_a:alice", "--config", str(config))
    assert [json.loads(x)["type"] for x in to_stdout.stdout.splitlines()] == [
        "muxi-isolation-export",
        "session",
        "message",
        "message",
        "end",
    ]

    other = config_file(tmp_path, "second")
    back = run("import", "muxi-export", str(export), "--config", str(other), "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["scopes"] == {"tenant_a:alice": {"messages": 2, "sessions": 1}}
    renamed = run(
        "import",
        "muxi-export",
        str(export),
        "--map",
        "tenant_z:zed",
        "--config",
        str(other),
        "--json",
    )
    assert json.loads(renamed.stdout)["scopes"] == {"tenant_z:zed": {"messages": 2, "sessions": 1}}
    target = opened(other)
    try:
        assert [m.content for m in target.get_messages(ALICE.with_session("c1"))] == ["hi", "there"]
        assert target.list_sessions(BOB) == []
    finally:
        target.close()


def test_import_problems_and_exit_codes(tmp_path: Path) -> None:
    config = config_file(tmp_path, "db")
    source = simple_chat_file(tmp_path, {"tenant_a:alice:c1": ["ok"], "garbage": ["x"]})
    partial = run(
        "import",
        "llamaindex-simple-chat",
        str(source),
        "--map",
        "{tenant}:{user}:{session}",
        "--config",
        str(config),
    )
    assert partial.returncode == 1
    assert "error: garbage: no valid owner" in partial.stdout
    no_map = run("import", "llamaindex-simple-chat", str(source), "--config", str(config))
    assert no_map.returncode == 2 and "--map" in no_map.stderr
    bad_template = run(
        "import",
        "llamaindex-simple-chat",
        str(source),
        "--map",
        "{tenant}:{usr}",
        "--config",
        str(config),
    )
    assert bad_template.returncode == 2 and "unknown field" in bad_template.stderr
    unreadable = run(
        "import",
        "langchain-inmemory",
        str(tmp_path / "missing.json"),
        "--map",
        "tenant_a:alice",
        "--config",
        str(config),
    )
    assert unreadable.returncode == 2 and "no such file" in unreadable.stderr
    wrong_option = run(
        "import", "muxi-export", str(source), "--table", "t", "--config", str(config)
    )
    assert wrong_option.returncode == 2 and "does not take --table" in wrong_option.stderr
    mapping = tmp_path / "owners.yaml"
    mapping.write_text("garbage: {tenant: tenant_c, user: carol, session: g}\n", encoding="utf-8")
    by_file = run(
        "import",
        "llamaindex-simple-chat",
        str(source),
        "--map-file",
        str(mapping),
        "--config",
        str(config),
        "--json",
    )
    report = json.loads(by_file.stdout)
    assert report["scopes"] == {"tenant_c:carol": {"messages": 1, "sessions": 1}}
    assert [p["key"] for p in report["skipped"]] == ["tenant_a:alice:c1"]


def fill(path: Path) -> None:
    backend = opened(path)
    try:
        for user in (ALICE, BOB, Scope("tenant_b", "carol")):
            backend.insert_session(
                user, SessionRecord("old", user, LONG_AGO, LONG_AGO, LONG_AGO + timedelta(hours=1))
            )
            backend.append_messages(user.with_session("old"), [Message("user", "from 2020")])
            backend.upsert_memories(user, [Memory("m", "kept", {}, [1.0, 0.0])])
    finally:
        backend.close()


def test_forget_and_purge(tmp_path: Path) -> None:
    config = config_file(tmp_path, "db", retention=86400)
    fill(config)
    refused = run("forget-user", "tenant_a:alice", "--config", str(config))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    forgot = run("forget-user", "tenant_a:alice", "--yes", "--config", str(config), "--json")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout) == {
        "user_id": "tenant_a:alice",
        "deleted": {"sessions": 1, "messages": 1, "memories": 1},
    }
    purged = run("purge-expired", "--config", str(config), "--tenant", "tenant_b")
    assert purged.returncode == 0, purged.stderr
    assert "purged sessions of tenant tenant_b" in purged.stdout and "1 sessions" in purged.stdout
    everyone = run("purge-expired", "--config", str(config), "--json")
    assert json.loads(everyone.stdout)["deleted"] == {"sessions": 1, "messages": 1}
    unconfirmed = run("forget-tenant", "tenant_a", "--config", str(config))
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    tenant = run("forget-tenant", "tenant_a", "--yes", "--config", str(config))
    assert tenant.returncode == 0 and "forgot tenant tenant_a: 0 sessions" in tenant.stdout
    backend = opened(config)
    try:
        assert backend.list_tenants() == ["tenant_b"]
        assert backend.count_memories(Scope("tenant_b", "carol")) == 1
    finally:
        backend.close()


def test_purge_without_retention_keeps_sessions(tmp_path: Path) -> None:
    config = config_file(tmp_path, "db")
    fill(config)
    kept = run("purge-expired", "--config", str(config))
    assert kept.returncode == 0 and "kept" in kept.stdout
    override = run("purge-expired", "--config", str(config), "--retention", "0", "--json")
    assert json.loads(override.stdout)["deleted"]["sessions"] == 3
    bad = run("purge-expired", "--config", str(config), "--retention", "-5")
    assert bad.returncode == 2


async def test_the_servers_admin_functions_are_these(tmp_path: Path) -> None:
    iso = Isolation.from_config(config_file(tmp_path, "db"))
    session = iso.create_session("tenant_a:alice")
    iso.messages(session.id, "tenant_a:alice").add("user", "hello")
    iso.memories("tenant_a:alice").add("likes tea", embedding=[1.0, 0.0])
    via_server = await server.export_user(iso, ALICE)
    direct = export_document(iso.backend, ALICE)
    assert {**via_server, "exported_at": None} == {**direct, "exported_at": None}
    assert await server.forget_user(iso, ALICE) == {
        "user_id": "tenant_a:alice",
        "deleted": {"sessions": 1, "messages": 1, "memories": 1},
    }
    iso.close()


def test_progress_shows_a_counter_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    stream = io.StringIO()
    with Progress(3, "import x", enabled=True, stream=stream, interval=0) as bar:
        for _ in range(3):
            bar.update()
    assert stream.getvalue().endswith("\rimport x: 3/3\n")
    quiet = io.StringIO()
    with Progress(3, "import x", stream=quiet) as bar:  # not a terminal: silent
        bar.update()
    assert quiet.getvalue() == "" and bar.count == 1


def test_progress_uses_tqdm_when_installed() -> None:
    stream = io.StringIO()
    with Progress(2, "import y", enabled=True, stream=stream) as bar:
        bar.update(2)
    assert "import y" in stream.getvalue() and "2/2" in stream.getvalue()
