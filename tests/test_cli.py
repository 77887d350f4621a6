"""The ``muxi-isolation`` console command: the parser, ``demo`` and ``serve`` for real."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from muxi_isolation import cli
from muxi_isolation.agent import UNKNOWN_PREFERENCE

SCRIPT = Path(sys.executable).parent / "muxi-isolation"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the parser ---------------------------------------------------------------------------------


def test_serve_and_demo_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"serve", "demo"} <= set(cli.COMMANDS)
    with pytest.raises(SystemExit) as caught:
        cli.main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "demo" in out


def test_serve_defaults() -> None:
    args = cli.build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.config, args.agent) == ("127.0.0.1", 8001, None, "demo")
    assert args.allow_anonymous is False


def test_adding_a_command_is_one_function(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    @cli.command("forget-user", "delete every row of a user", cli.CONFIG, cli.arg("user_id"))
    def forget_user(args: argparse.Namespace) -> int:
        print(f"forgetting {args.user_id} (config {args.config})")
        return 3

    assert cli.main(["forget-user", "tenant_a:user_1", "--config", "x.yaml"]) == 3
    assert capsys.readouterr().out == "forgetting tenant_a:user_1 (config x.yaml)\n"


def test_a_library_error_exits_2_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_a_missing_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main([])
    assert caught.value.code == 2


def test_redact_hides_passwords() -> None:
    assert cli.redact("postgresql://app:hunter2@db/muxi") == "postgresql://app:***@db/muxi"
    assert cli.redact("memory://") == "memory://"
    assert cli.redact("not a URL at all") == "not a URL at all"  # printed as given


def test_python_dash_m_runs_the_same_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "muxi_isolation.cli", "forget-tenant", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--yes" in done.stdout and "--config" in done.stdout


# -- demo ---------------------------------------------------------------------------------------


def test_demo_plays_the_seed_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--url", "memory://"]) == 0
    out = capsys.readouterr().out
    assert '"X-Muxi-User-Id: user_a" -d \'{"message":"Remember I like Python"' in out
    assert f'"response": "{UNKNOWN_PREFERENCE}"' in out
    assert '"response": "You like Python."' in out
    assert '"X-Muxi-User-Id: tenant_b:user_1"' in out
    assert "-> 404" in out and "-> 403" in out
    assert "FAIL" not in out
    assert "10 of 10 isolation checks passed." in out


def test_the_console_script_runs_the_demo_on_embedded_sqlite() -> None:
    done = subprocess.run(
        [str(SCRIPT), "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "storage: sqlite:///" in done.stdout
    assert "10 of 10 isolation checks passed." in done.stdout


# -- serve --------------------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(
    started: list[subprocess.Popen[str]],
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    started.append(process)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_serve_with_a_config_file_and_memory_that_persists(
    tmp_path: Path, serve: list[subprocess.Popen[str]]
) -> None:
    config = tmp_path / "muxi.yaml"
    config.write_text(
        "memory:\n"
        "  persistent:\n"
        "    provider: sqlite\n"
        "    connection_string: ${{ secrets.DB_URL }}\n"
        "  session_timeout: 600\n"
        "auth:\n"
        "  client_keys:\n"
        "    - tenant: tenant_a\n"
        "      key: ${{ secrets.TENANT_A_KEY }}\n"
        "  admin_keys:\n"
        "    - key: ${{ secrets.ADMIN_KEY }}\n"
    )
    env = {
        "TENANT_A_KEY": "fmc_from_secret",
        "ADMIN_KEY": "fma_from_secret",
        "DB_URL": f"sqlite:///{tmp_path / 'muxi.db'}",
    }
    headers = {"X-Muxi-Client-Key": "fmc_from_secret", "X-Muxi-User-Id": "tenant_a:user_1"}
    process, base = start(serve, "--config", str(config), env=env)
    told = httpx.post(f"{base}/v1/chat", headers=headers, json={"message": "Remember I like Go"})
    assert told.status_code == 200
    other = httpx.post(
        f"{base}/v1/chat",
        headers={**headers, "X-Muxi-User-Id": "tenant_b:user_1"},
        json={"message": "What language do I like?"},
    )
    assert (other.status_code, other.json()["error"]) == (403, "forbidden")
    keyless = httpx.post(f"{base}/v1/chat", json={"message": "hi"})
    assert keyless.status_code == 401
    code, err = stop(process)
    assert code == 0, err
    assert f"storage: sqlite:///{tmp_path / 'muxi.db'}" in err

    # a new server process on the same file: the session and the memory are still there
    process, base = start(serve, "--config", str(config), env=env)
    sid = told.json()["session_id"]
    history = httpx.get(f"{base}/v1/sessions/{sid}", headers=headers)
    assert [m["content"] for m in history.json()["messages"]][:1] == ["Remember I like Go"]
    asked = httpx.post(
        f"{base}/v1/chat", headers=headers, json={"message": "What language do I like?"}
    )
    assert asked.json()["response"] == "You like Go."
    code, err = stop(process)
    assert code == 0, err


def test_serve_without_keys_generates_them_and_takes_an_agent_setting(
    serve: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    config = tmp_path / "muxi.yaml"
    config.write_text("memory:\n  persistent:\n    provider: memory\n")
    process, base = start(
        serve,
        "--config",
        str(config),
        "--agent",
        "llama_index.core.llms:MockLLM",
        "--allow-anonymous",
    )
    anonymous = httpx.post(
        f"{base}/v1/chat", headers={"X-Muxi-User-Id": "user_123"}, content=b'{"message": "Hello"}'
    )
    assert anonymous.status_code == 200
    assert "user: Hello" in anonymous.json()["response"]  # MockLLM echoes its prompt
    code, err = stop(process)
    assert code == 0, err
    assert "client key (tenant default): fmc_" in err
    assert "admin key:" in err
    client_key = err.split("client key (tenant default): ")[1].split()[0]
    assert len(client_key) > 40
