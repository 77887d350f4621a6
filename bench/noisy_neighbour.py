"""One tenant floods writes and searches at its limits; another tenant's latency is compared
with the same run without the flood.

    python bench/noisy_neighbour.py                  # memory and SQLite, ~8 s per phase
    python bench/noisy_neighbour.py --seconds 4 --flooders 8

How long: about 60 s with the defaults (3 phases of 8 s on each of memory and SQLite, plus
setup); add ~30 s for PostgreSQL, which runs when ``MUXI_BENCH_POSTGRES_URL`` is set (a
superuser URL; the app connects as it, so row-level security is not in the way here).

The quiet tenant (one user) alternates appending a message to its session and a top-5
vector search over its 300 memories, and the latency of each call is recorded. The noisy
tenant's ``--flooders`` threads (one user each, every one already at its
``max_memories_per_user``) loop over: a new memory (refused by the quota, inside the write
transaction), a replaced memory (passes), a new session (refused) and a search. Phases:

- ``baseline``: the quiet tenant alone;
- ``limited``: the flood, each flooder held to ``requests_per_minute`` (``--rpm``) by the
  same token bucket the HTTP edge uses: what a server lets through;
- ``unlimited``: the flood with no rate limit, only the storage quotas (worst case).

The target is quiet p99 <= 1.5x baseline under the ``limited`` flood. Python threads share
one interpreter lock and this machine's cores, so the ``unlimited`` ratio measures CPU
contention as much as storage. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from muxi_isolation import Backend, Memory, Message, QuotaExceeded, Scope, SessionRecord
from muxi_isolation.quotas import Limits, RateLimiter
from muxi_isolation.stores import open_backend

DIM = 32
QUIET_MEMORIES = 300
NOISY_LIMIT = 300


def vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def session(user: Scope, sid: str) -> SessionRecord:
    now = datetime.now(timezone.utc)
    return SessionRecord(sid, user, now, now, now + timedelta(days=1))


def fill(backend: Backend, user: Scope, n: int, rng: random.Random) -> None:
    backend.insert_session(user, session(user, "s"))
    memories = [Memory(f"m{i}", f"memory {i}", embedding=vector(rng)) for i in range(n)]
    backend.upsert_memories(user, memories)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def flood(
    backend: Backend, user: Scope, stop: threading.Event, limiter: RateLimiter | None
) -> dict[str, int]:
    rng = random.Random(user.user_id)
    done = {"ok": 0, "refused": 0, "throttled": 0}
    n = 0
    while not stop.is_set():
        if limiter is not None:
            try:
                limiter.take(user.tenant_id, user.user_id)
            except QuotaExceeded:
                done["throttled"] += 1
                stop.wait(0.01)
                continue
        step = n % 4
        n += 1
        try:
            if step == 0:  # a new memory: at the limit, refused in the transaction
                backend.upsert_memories(user, [Memory(f"new{n}", "x", embedding=vector(rng))])
            elif step == 1:  # replacing one it has: passes
                memory = Memory(f"m{rng.randrange(NOISY_LIMIT)}", "y", embedding=vector(rng))
                backend.upsert_memories(user, [memory])
            elif step == 2:
                backend.insert_session(user, session(user, f"x{n}"))
            else:
                backend.search_memories(user, vector(rng), 5)
            done["ok"] += 1
        except QuotaExceeded:
            done["refused"] += 1
    return done


def drain(limiter: RateLimiter, user: Scope) -> None:
    try:
        while True:
            limiter.take(user.tenant_id, user.user_id)
    except QuotaExceeded:
        pass


def measure(backend: Backend, quiet: Scope, seconds: float) -> list[float]:
    rng = random.Random(7)
    chat = quiet.with_session("s")
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        if i % 2:
            backend.search_memories(quiet, vector(rng), 5)
        else:
            backend.append_messages(chat, [Message("user", f"turn {i}")])
        times.append(time.perf_counter() - start)
        i += 1
    return times


def phase(
    backend: Backend,
    quiet: Scope,
    noisy: list[Scope],
    seconds: float,
    limiter: Callable[[], RateLimiter | None] | None,
) -> tuple[list[float], dict[str, int]]:
    stop = threading.Event()
    totals = {"ok": 0, "refused": 0, "throttled": 0}
    lock = threading.Lock()

    def run(user: Scope, bucket: RateLimiter | None) -> None:
        got = flood(backend, user, stop, bucket)
        with lock:
            for key, value in got.items():
                totals[key] += value

    threads = []
    if limiter is not None:
        shared = limiter()
        for user in noisy if shared is not None else ():
            drain(shared, user)  # at its limit from the start: no saved-up burst
        threads = [threading.Thread(target=run, args=(user, shared)) for user in noisy]
    for thread in threads:
        thread.start()
    time.sleep(0.2 if threads else 0)  # let the flood reach its pace
    try:
        times = measure(backend, quiet, seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return times, totals


def run_backend(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {} if url == "memory://" else {"embedding_dimension": DIM}
    backend = open_backend(url, **options)
    quiet = Scope("quiet", "u")
    noisy = [Scope("noisy", f"f{i}") for i in range(args.flooders)]
    rng = random.Random(1)
    fill(backend, quiet, QUIET_MEMORIES, rng)
    for user in noisy:
        fill(backend, user, NOISY_LIMIT, rng)
    over = Limits(
        requests_per_minute=args.rpm, max_memories_per_user=NOISY_LIMIT, max_sessions_per_user=1
    )
    backend.limits = Limits(tenants={"noisy": over})
    measure(backend, quiet, 1.0)  # warm up
    result: dict[str, Any] = {}
    phases: dict[str, Callable[[], RateLimiter | None] | None] = {
        "baseline": None,
        "limited": lambda: RateLimiter(backend.limits),
        "unlimited": lambda: None,
    }
    base_p50 = base_p99 = 0.0
    for name, limiter in phases.items():
        times, totals = phase(backend, quiet, noisy, args.seconds, limiter)
        p50, p99 = statistics.median(times), percentile(times, 0.99)
        if name == "baseline":
            base_p50, base_p99 = p50, p99
        result[name] = {
            "calls": len(times),
            "p50_ms": round(p50 * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
            "p50_ratio": round(p50 / base_p50, 2),
            "p99_ratio": round(p99 / base_p99, 2),
            "flood": totals,
        }
        print(
            f"{kind:8} {name:9} calls={len(times):6} p50={p50 * 1000:7.3f} ms "
            f"p99={p99 * 1000:7.3f} ms  p99x={p99 / base_p99:5.2f}  flood={totals}",
            flush=True,
        )
    backend.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase")
    parser.add_argument("--flooders", type=int, default=4, help="noisy users, one thread each")
    parser.add_argument("--rpm", type=int, default=600, help="each noisy user's rate limit")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"memory": "memory://", "sqlite": f"sqlite:///{Path(tmp) / 'noisy.db'}"}
        pg = os.environ.get("MUXI_BENCH_POSTGRES_URL")
        if pg:
            targets["postgres"] = pg
        for kind, url in targets.items():
            results[kind] = run_backend(kind, url, args)
    limited = {kind: r["limited"]["p99_ratio"] for kind, r in results.items()}
    summary = {
        "bench": "noisy_neighbour",
        "seconds_per_phase": args.seconds,
        "flooders": args.flooders,
        "rpm": args.rpm,
        "p99_ratio_limited": limited,
        "p99_ratio_unlimited": {k: r["unlimited"]["p99_ratio"] for k, r in results.items()},
        "target_p99_ratio": 1.5,
        "met": all(v <= 1.5 for v in limited.values()),
        "results": results,
    }
    print(json.dumps(summary), file=sys.stdout)


if __name__ == "__main__":
    main()
