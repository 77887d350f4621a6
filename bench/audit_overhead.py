"""What the audit trail costs: the history read and the vector search with audit off, on
(the default: refusals and admin acts, database sink) and with every read recorded.

    python bench/audit_overhead.py                      # SQLite and PostgreSQL
    python bench/audit_overhead.py --databases sqlite --reads 300

How long: about 80 s with the defaults on 2 cores (starting a throwaway PostgreSQL, loading
20k messages and 10k memories into each database, then 3 x 3 x 600 timed calls per
database, the modes interleaved).

The calls are those of ``bench/history_scaling.py`` (``get_messages(scope, last=50)`` of a
random session, as the non-owner app role with RLS on PostgreSQL) and of the search
benchmark (``search_memories(scope, vector, k=10)`` of a random user). Audit on writes
nothing for them, so its cost is the hooks alone; with ``reads: true`` each call also
writes an event in its own transaction. A refused call (a filter naming a reserved key)
is timed too: with audit on it writes one event. Modes alternate in rounds of 50 calls so
that drift on a shared machine hits them alike.

Prints a table, then one JSON line: per database ``on_vs_off_history``, ``on_vs_off_search``
(median on / median off; the target is <= 1.05), ``reads_vs_off_*`` and the refusal's
``refusal_ms_off`` / ``refusal_ms_on``.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _corpus import postgres  # bench/ is on sys.path
from history_scaling import PER_SESSION, _nothing, load_postgres, load_sqlite, session_scope
from sqlalchemy.engine import make_url

from muxi_isolation import Memory, ReservedKey, Scope
from muxi_isolation.audit import NO_AUDIT, Auditor
from muxi_isolation.stores.sql import SQLBackend, create_app_role

MODES = ("off", "on", "reads")
ROUND = 50
DIM = 64


def fill_memories(backend: SQLBackend, users: int, per_user: int, rng: random.Random) -> None:
    for u in range(users):
        scope = Scope("tenant_0", f"searcher_{u}")
        batch = [
            Memory(f"m{i}", f"memory {i}", {}, [rng.gauss(0, 1) for _ in range(DIM)])
            for i in range(per_user)
        ]
        backend.upsert_memories(scope, batch)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def run(kind: str, args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    sessions = args.rows // PER_SESSION
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres() if kind == "postgres" else _nothing() as admin_url,
    ):
        if kind == "sqlite":
            path = Path(tmp) / "audit.db"
            backend = SQLBackend(f"sqlite:///{path}", embedding_dimension=DIM)
        else:
            password = secrets.token_hex(8)
            role = create_app_role(admin_url, "muxi_bench_app", password=password)
            app = make_url(admin_url).set(
                drivername="postgresql+psycopg", username=role, password=password
            )
            backend = SQLBackend(
                app, admin_url=admin_url, schema="audit_bench", embedding_dimension=DIM
            )
        auditors = {
            "off": NO_AUDIT,
            "on": Auditor.database(backend),
            "reads": Auditor.database(backend, reads=True),
        }
        try:
            backend.setup()
            started = time.perf_counter()
            if kind == "sqlite":
                load_sqlite(path, backend, 0, sessions)
            else:
                load_postgres(admin_url, backend, 0, sessions)
            fill_memories(backend, args.users, args.per_user, rng)
            print(f"{kind}: loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)

            def history() -> object:
                return backend.get_messages(session_scope(rng.randrange(sessions)), last=50)

            def search() -> object:
                user = Scope("tenant_0", f"searcher_{rng.randrange(args.users)}")
                query = [rng.gauss(0, 1) for _ in range(DIM)]
                return backend.search_memories(user, query, k=10)

            def refused() -> object:
                try:
                    return backend.list_memories(Scope("tenant_0", "x"), filter={"muxi_user_id": 1})
                except ReservedKey:
                    return None

            times: dict[tuple[str, str], list[float]] = {}
            for name, call in (("history", history), ("search", search), ("refusal", refused)):
                backend.audit = NO_AUDIT
                for _ in range(ROUND):  # warm the pool and the caches
                    call()
                for _ in range(max(1, args.reads // ROUND)):
                    for mode in MODES:
                        backend.audit = auditors[mode]
                        times.setdefault((name, mode), []).extend(timed(call) for _ in range(ROUND))
            backend.audit = NO_AUDIT
        finally:
            backend.close()
    medians = {key: statistics.median(t) for key, t in times.items()}
    for (name, mode), median in sorted(medians.items()):
        print(f"{kind:9} {name:8} {mode:6} {median:8.3f} ms", file=sys.stderr)
    return {
        "on_vs_off_history": medians["history", "on"] / medians["history", "off"],
        "on_vs_off_search": medians["search", "on"] / medians["search", "off"],
        "reads_vs_off_history": medians["history", "reads"] / medians["history", "off"],
        "reads_vs_off_search": medians["search", "reads"] / medians["search", "off"],
        "refusal_ms_off": medians["refusal", "off"],
        "refusal_ms_on": medians["refusal", "on"],
        "history_ms_off": medians["history", "off"],
        "search_ms_off": medians["search", "off"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="messages in the history")
    parser.add_argument("--users", type=int, default=50, help="users holding memories")
    parser.add_argument("--per-user", type=int, default=200, help="memories per user")
    parser.add_argument("--reads", type=int, default=600, help="timed calls per mode")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = {kind: run(kind, args, rng) for kind in args.databases.split(",")}
    print(f"{'database':9} {'figure':22} value")
    for kind, figures in results.items():
        for name, value in figures.items():
            print(f"{kind:9} {name:22} {value:.3f}")
    print(json.dumps({"benchmark": "audit_overhead", "results": results}))


if __name__ == "__main__":
    main()
