"""Half- vs full-precision vectors on PostgreSQL: table and index size, latency and recall.

    python bench/halfvec.py                         # 50k vectors, dim 384, 1,000 users
    python bench/halfvec.py --rows 100000 --dim 768 --shared-buffers 1GB

How long: about 2.5 minutes with the defaults on 2 cores (seconds to generate and copy,
about 25 s to build each HNSW index on one core, then the queries); it grows with --rows,
--dim, --per-bucket and --queries. The run time is printed at the end and in the JSON.

Data: the corpus of ``bench/vector_search.py`` (``_corpus.make_corpus``: 100 clustered
topics, each user writing about 3 of them, Zipf-distributed user sizes). The same rows go
into two stores of one server, in two schemas: ``embedding_precision="full"`` (``VECTOR``)
and ``"half"`` (``HALFVEC``), each with the HNSW index ``SQLBackend`` makes (built after
the rows are in, as ``vector_search.py`` does), then ``VACUUM ANALYZE``.

Measured, in the same run:
- size: the table with its TOAST (``pg_table_size``: a ``VECTOR`` of more than about 500
  dimensions is over PostgreSQL's 2 kB row threshold and moves to TOAST, a ``HALFVEC`` of up
  to about 1,000 stays in the row), its HNSW index (``pg_relation_size``), and
  ``pg_total_relation_size`` (table, TOAST and every index);
- for a sample of users per size bucket, ``SQLBackend.search_memories`` (k = 10, as the
  non-owner app role, row-level security on) on both stores, alternating which goes first:
  median latency, recall@10 against exact search in numpy (float32), and the overlap of the
  half store's answer with the full store's.

Prints a table, then one JSON line of the figures (the last line).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import psycopg
from _corpus import (
    BUCKETS,
    Corpus,
    add_corpus_arguments,
    bucket_label,
    git_head,
    machine,
    make_corpus,
    postgres,
    recall,
    server_version,
    shared_buffers,
    versions,
)
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlalchemy.engine import make_url

from muxi_isolation import Scope
from muxi_isolation.stores.sql import SQLBackend, create_app_role
from muxi_isolation.stores.sql._schema import create_hnsw

K = 10
TENANT = "bench"
PRECISIONS = ("full", "half")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def names(backend: SQLBackend) -> tuple[str, str]:
    t = backend.tables.memories
    return f'"{t.schema}"."{t.name}"', f'"{t.schema}"."{backend.tables.prefix}memories_hnsw"'


def load(admin_url: str, stores: dict[str, SQLBackend], corpus: Corpus) -> dict[str, float]:
    """COPY the rows into the full store, copy them cast into the half one, then build each
    HNSW index (timed) as ``SQLBackend`` makes it."""
    full, full_index = names(stores["full"])
    half, half_index = names(stores["half"])
    columns = "tenant_id, user_id, id, session_id, content, metadata, embedding, created_at"
    now = datetime.now(timezone.utc)
    seconds: dict[str, float] = {}
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"DROP INDEX {full_index}")
        conn.execute(f"DROP INDEX {half_index}")
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {full} ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["varchar"] * 4 + ["text", "jsonb", "vector", "timestamptz"])
            for i, (user, vector) in enumerate(zip(corpus.owner, corpus.vectors, strict=True)):
                row = [TENANT, f"u{user}", f"m{i}", None, f"memory {i}", Jsonb({"i": i}), vector]
                copy.write_row([*row, now])
        conn.execute(
            f"INSERT INTO {half} ({columns}) SELECT tenant_id, user_id, id, session_id, "
            f"content, metadata, embedding::halfvec, created_at FROM {full}"
        )
    for precision, backend in stores.items():
        started = time.perf_counter()
        with backend._as_owner() as owner:
            owner.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            owner.execute(text("SET LOCAL max_parallel_maintenance_workers = 0"))  # a core free
            create_hnsw(owner, backend.tables)
        seconds[precision] = time.perf_counter() - started
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {full}")
        conn.execute(f"VACUUM ANALYZE {half}")
    return seconds


def sizes(admin_url: str, backend: SQLBackend) -> dict[str, int]:
    table, index = names(backend)
    with psycopg.connect(libpq(admin_url)) as conn:
        row = conn.execute(
            "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass), "
            "pg_total_relation_size(%s::regclass)",
            (table, index, table),
        ).fetchone()
    assert row is not None
    return {"table_bytes": row[0], "hnsw_bytes": row[1], "total_bytes": row[2]}


def search(backend: SQLBackend, scope: Scope, query: list[float]) -> tuple[list[str], float]:
    started = time.perf_counter()
    hits = backend.search_memories(scope, query, K)
    return [m.id for m, _ in hits], (time.perf_counter() - started) * 1000


def measure(stores: dict[str, SQLBackend], corpus: Corpus, args: Any) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 1)
    out: dict[str, Any] = {}
    for b, users in corpus.sample_users(rng, args.per_bucket):
        s: dict[str, list[float]] = defaultdict(list)
        paths: set[str] = set()
        for user in users:
            scope = Scope(TENANT, f"u{user}")
            paths.update(backend.search_plan(scope) for backend in stores.values())
            warm = [float(x) for x in corpus.topics[corpus.user_topics[user][0]]]
            for backend in stores.values():  # the user's pages into the cache, both stores
                search(backend, scope, warm)
            for q in range(max(args.queries, -(-20 // len(users)))):  # >= 20 per bucket
                query = corpus.query(user, rng)
                qlist = [float(x) for x in query]
                truth = [f"m{i}" for i in corpus.exact(user, query, K)]
                got: dict[str, list[str]] = {}
                for precision in PRECISIONS[q % 2 :] + PRECISIONS[: q % 2]:  # alternate order
                    got[precision], ms = search(stores[precision], scope, qlist)
                    s[f"{precision}_ms"].append(ms)
                    s[f"{precision}_recall"].append(recall(got[precision], truth))
                s["half_vs_full"].append(recall(got["half"], got["full"]))
                s["rows"].append(float(corpus.sizes[user]))
        lo, hi = BUCKETS[b]
        out[bucket_label(lo, hi)] = {
            "users": len(users),
            "queries": len(s["rows"]),
            "path": "/".join(sorted(paths)),
            **{f"{p}_median_ms": round(statistics.median(s[f"{p}_ms"]), 3) for p in PRECISIONS},
            **{
                f"{p}_recall_at_10": round(statistics.fmean(s[f"{p}_recall"]), 4)
                for p in PRECISIONS
            },
            "half_vs_full_recall_at_10": round(statistics.fmean(s["half_vs_full"]), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_arguments(parser, rows=50_000, users=1_000)
    parser.add_argument("--shared-buffers", default=None, help="e.g. 1GB (throwaway server)")
    args = parser.parse_args()
    started = time.perf_counter()
    corpus = make_corpus(args.rows, args.users, args.dim, args.seed)
    with postgres(shared_buffers=args.shared_buffers) as admin_url:
        password = secrets.token_hex(8)
        role = create_app_role(admin_url, "muxi_bench_app", password=password)
        app_url = make_url(admin_url).set(
            drivername="postgresql+psycopg", username=role, password=password
        )
        stores = {
            p: SQLBackend(
                app_url,
                admin_url=admin_url,
                embedding_dimension=args.dim,
                embedding_precision=p,
                schema=f"bench_{p}_{secrets.token_hex(4)}",
            )
            for p in PRECISIONS
        }
        try:
            for backend in stores.values():
                backend.setup()
            build = load(admin_url, stores, corpus)
            size = {p: sizes(admin_url, backend) for p, backend in stores.items()}
            buckets = measure(stores, corpus, args)
            server = server_version(libpq(admin_url))
            buffers = shared_buffers(libpq(admin_url))
        finally:
            for backend in stores.values():
                backend.close()
    seconds = time.perf_counter() - started
    report(args, corpus, build, size, buckets, server, buffers, seconds)


def report(
    args: Any,
    corpus: Corpus,
    build: dict[str, float],
    size: dict[str, dict[str, int]],
    buckets: dict[str, Any],
    server: str,
    buffers: str,
    seconds: float,
) -> None:
    mib = 1024**2
    print(
        f"# halfvec vs vector: {corpus.rows} rows, dim {corpus.dim}, {corpus.users} users, "
        f"k = {K}; {server}, shared_buffers {buffers}; ran {seconds:.0f} s"
    )
    print(f"{'':>6} {'table MiB':>10} {'HNSW MiB':>9} {'total MiB':>10} {'HNSW build s':>13}")
    for p in PRECISIONS:
        z = size[p]
        print(
            f"{p:>6} {z['table_bytes'] / mib:10.1f} {z['hnsw_bytes'] / mib:9.1f} "
            f"{z['total_bytes'] / mib:10.1f} {build[p]:13.1f}"
        )
    ratio = {key: size["half"][key] / size["full"][key] for key in size["full"]}
    print(
        f"{'half/full':>9}: table {ratio['table_bytes']:.2f}, HNSW {ratio['hnsw_bytes']:.2f}, "
        f"total {ratio['total_bytes']:.2f}"
    )
    print()
    head = (
        f"{'user rows':>10} {'path':>10} {'full ms':>8} {'half ms':>8} "
        f"{'full rec':>8} {'half rec':>8} {'half~full':>9}"
    )
    print(head)
    print("-" * len(head))
    for label, line in buckets.items():
        print(
            f"{label:>10} {line['path']:>10} {line['full_median_ms']:8.2f} "
            f"{line['half_median_ms']:8.2f} {line['full_recall_at_10']:8.3f} "
            f"{line['half_recall_at_10']:8.3f} {line['half_vs_full_recall_at_10']:9.3f}"
        )
    figures = {
        "bench": "halfvec",
        "rows": corpus.rows,
        "dim": corpus.dim,
        "users": corpus.users,
        "k": K,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "server": server,
        "shared_buffers": buffers,
        "commit": git_head(),
        "machine": machine(),
        "versions": versions("muxi-isolation", "pgvector", "psycopg", "sqlalchemy"),
        "size": size,
        "size_ratio_half_to_full": {k: round(v, 3) for k, v in ratio.items()},
        "hnsw_build_seconds": {p: round(s, 1) for p, s in build.items()},
        "buckets": buckets,
        "min_half_vs_full_recall_at_10": min(
            line["half_vs_full_recall_at_10"] for line in buckets.values()
        ),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
