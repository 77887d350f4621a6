"""Per-user exact vector search on the embedded default (SQLite) beside numpy and Chroma.

    python bench/embedded.py                          # 100k memories, dim 384, 2,000 users
    python bench/embedded.py --rows 20000 --users 400  # a smoke run (~1 min)

How long: 3.5 to 7.5 minutes (205-450 s) with the defaults on 2 shared cores, most of it
Chroma's load (one database per user: 120-310 s); ours loads in 5-21 s (5.1 s with the
machine quiet, 21 s at a 1-minute load of 10), the queries (with ``--settle``) take about
2 minutes. Both figures move with what else runs on the machine: compare within one run.

The corpus of ``bench/_corpus.py`` (clustered embeddings, Zipf user sizes) goes into:

- ours: ``SQLBackend("sqlite:///...")``, the default a new user runs on, written with
  ``upsert_memories`` (one call per user and 1,000 rows, user after user), searched with
  ``search_memories`` (exact: every one of the user's rows is scored);
- numpy: exact brute force over the user's rows already in memory (no storage: the floor);
- Chroma: one ``PersistentClient`` (a database directory) per user, cosine space, written
  with ``add`` (1,000 rows a call), searched with ``query(n_results=10)``; each sampled
  user's database is opened before its queries and the first query is reported apart
  (``chroma_first_ms``: it loads the user's index), as is our first query of the user
  (``ours_first_ms``: it reads the user's rows, which a search then keeps while they
  hold). Then ``--settle`` seconds pass before the timed queries: opening a Chroma
  database starts background work that slowed all three methods alike (numpy 2.4 ms at
  6k rows after 2 s, 6.3 ms without).

For a sample of users per size bucket, each query runs through all three in rotated order
(the machine is shared; no method is always first): median and p95 latency of the whole
call, and recall@10 against numpy's exact ids (ours must return numpy's ids in numpy's
order: ``exact_match``). Prints a table, then one JSON line with
``embedded_ratio_vs_chroma`` (ours over Chroma's median, in the worst bucket) and
``embedded_load_s`` (seconds to write every row through ``upsert_memories``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's exact baseline: no thread fights
import numpy as np
from _corpus import (  # bench/ is on sys.path
    BUCKETS,
    Corpus,
    add_corpus_arguments,
    bucket_label,
    git_head,
    machine,
    make_corpus,
    p95,
    recall,
    timed,
    versions,
)

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend

K = 10
TENANT = "bench"
BATCH = 1000


def uid(user: int) -> str:
    return f"u{user}"


def batches(corpus: Corpus) -> list[tuple[int, range]]:
    out = []
    for user in range(corpus.users):
        rows = corpus.user_rows(user)
        out += [
            (user, range(s, min(s + BATCH, rows.stop))) for s in range(rows.start, rows.stop, BATCH)
        ]
    return out


def load_ours(backend: SQLBackend, corpus: Corpus) -> float:
    """Seconds inside ``upsert_memories``; the records are built outside the clock."""
    spent = 0.0
    for user, rows in batches(corpus):
        vectors = corpus.vectors[rows.start : rows.stop].tolist()
        memories = [
            Memory(f"m{i}", f"memory {i}", {"i": i}, v) for i, v in zip(rows, vectors, strict=True)
        ]
        started = time.perf_counter()
        backend.upsert_memories(Scope(TENANT, uid(user)), memories)
        spent += time.perf_counter() - started
    return spent


class Chroma:
    """One database directory per user, as Chroma's per-user design has it."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import chromadb
            from chromadb.api.client import SharedSystemClient
            from chromadb.config import Settings
        self.chromadb, self.shared, self.settings = chromadb, SharedSystemClient, Settings
        self.root = root

    def _collection(self, user: int, create: bool) -> Any:
        client = self.chromadb.PersistentClient(
            path=str(self.root / uid(user)),
            settings=self.settings(anonymized_telemetry=False),
        )
        if create:
            return client.create_collection(
                "memories", metadata={"hnsw:space": "cosine"}, embedding_function=None
            )
        return client.get_collection("memories", embedding_function=None)

    def load(self, corpus: Corpus) -> float:
        spent = 0.0
        current, collection = -1, None
        for user, rows in batches(corpus):
            ids = [f"m{i}" for i in rows]
            docs = [f"memory {i}" for i in rows]
            metas = [{"i": i} for i in rows]
            vectors = corpus.vectors[rows.start : rows.stop]
            started = time.perf_counter()
            if user != current:
                self.shared.clear_system_cache()  # one open database at a time, as at rest
                current, collection = user, self._collection(user, create=True)
            collection.add(ids=ids, embeddings=vectors, documents=docs, metadatas=metas)
            spent += time.perf_counter() - started
        self.shared.clear_system_cache()
        return spent

    def open(self, user: int) -> Any:
        return self._collection(user, create=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_arguments(parser)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before timing a user")
    args = parser.parse_args()
    began = time.perf_counter()
    figures: dict[str, Any] = {
        "bench": "embedded",
        "commit": git_head(),
        "machine": machine(),
        "versions": versions("muxi-isolation", "numpy", "sqlalchemy", "chromadb"),
        "rows": args.rows,
        "users": args.users,
        "dim": args.dim,
    }
    corpus = make_corpus(args.rows, args.users, args.dim, args.seed)
    root = Path(tempfile.mkdtemp(prefix="muxi-bench-embedded-"))
    backend = SQLBackend(f"sqlite:///{root / 'muxi.db'}")
    try:
        backend.setup()
        figures["embedded_load_s"] = round(load_ours(backend, corpus), 2)
        print(f"ours: {args.rows} rows in {figures['embedded_load_s']} s", file=sys.stderr)
        chroma = Chroma(root / "chroma")
        figures["chroma_load_s"] = round(chroma.load(corpus), 2)
        print(f"chroma: {args.rows} rows in {figures['chroma_load_s']} s", file=sys.stderr)
        figures.update(run_queries(backend, chroma, corpus, args))
    finally:
        backend.close()
        shutil.rmtree(root, ignore_errors=True)
    figures["run_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures))


def run_queries(backend: SQLBackend, chroma: Chroma, corpus: Corpus, args: Any) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 1)
    stats: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for b, users in corpus.sample_users(rng, args.per_bucket):
        for user in users:
            scope = Scope(TENANT, uid(user))
            rows = corpus.user_rows(user)

            def ours(query: list[float]) -> list[str]:
                return [m.id for m, _ in backend.search_memories(scope, query, K)]  # noqa: B023

            opened, open_ms = timed(lambda: chroma.open(user))  # noqa: B023
            first = corpus.query(user, rng)
            _, first_ms = timed(lambda: _chroma(opened, first))  # noqa: B023
            stats[b]["chroma_first_ms"].append(open_ms + first_ms)
            _, ours_first = timed(lambda: ours(first.tolist()))  # noqa: B023
            stats[b]["ours_first_ms"].append(ours_first)  # reads the user's rows
            time.sleep(args.settle)
            for q in range(args.queries):
                query = corpus.query(user, rng)
                as_list = query.tolist()
                truth = [f"m{i}" for i in corpus.exact(user, query, K)]
                runs: dict[str, Callable[[], list[str]]] = {
                    "ours": lambda: ours(as_list),  # noqa: B023
                    "numpy": lambda: [f"m{i}" for i in corpus.exact(user, query, K)],  # noqa: B023
                    "chroma": lambda: _chroma(opened, query),  # noqa: B023
                }
                names = list(runs)
                for name in names[q % 3 :] + names[: q % 3]:
                    got, ms = timed(runs[name])
                    stats[b][f"{name}_ms"].append(ms)
                    stats[b][f"{name}_recall"].append(recall(got, truth))
                    if name == "ours":
                        stats[b]["exact_match"].append(float(got == truth))
                stats[b]["rows"].append(float(len(rows)))
            chroma.shared.clear_system_cache()
    return report(stats)


def _chroma(collection: Any, query: np.ndarray) -> list[str]:
    found = collection.query(query_embeddings=[query], n_results=K, include=[])
    return list(found["ids"][0])


def report(stats: dict[int, dict[str, list[float]]]) -> dict[str, Any]:
    head = (
        f"{'user rows':>12} {'ours ms':>8} {'p95':>6} {'exact':>5} | {'numpy ms':>8} | "
        f"{'chroma ms':>9} {'p95':>6} {'recall':>6} {'first':>7} | {'ours first':>10} "
        f"{'ours/chroma':>11}"
    )
    print(head)
    print("-" * len(head))
    buckets: dict[str, Any] = {}
    med = statistics.median
    for b in sorted(stats):
        s = stats[b]
        label = bucket_label(*BUCKETS[b])
        line = {
            "rows_median": med(s["rows"]),
            "ours_median_ms": med(s["ours_ms"]),
            "ours_p95_ms": p95(s["ours_ms"]),
            "ours_exact_match": statistics.fmean(s["exact_match"]),
            "numpy_median_ms": med(s["numpy_ms"]),
            "chroma_median_ms": med(s["chroma_ms"]),
            "chroma_p95_ms": p95(s["chroma_ms"]),
            "chroma_mean_recall": statistics.fmean(s["chroma_recall"]),
            "chroma_first_ms": med(s["chroma_first_ms"]),
            "ours_first_ms": med(s["ours_first_ms"]),
        }
        line["ratio"] = line["ours_median_ms"] / line["chroma_median_ms"]
        buckets[label] = {k: round(v, 4) for k, v in line.items()}
        print(
            f"{label:>12} {line['ours_median_ms']:8.2f} {line['ours_p95_ms']:6.2f} "
            f"{line['ours_exact_match']:5.2f} | {line['numpy_median_ms']:8.3f} | "
            f"{line['chroma_median_ms']:9.2f} {line['chroma_p95_ms']:6.2f} "
            f"{line['chroma_mean_recall']:6.3f} {line['chroma_first_ms']:7.1f} | "
            f"{line['ours_first_ms']:10.1f} {line['ratio']:11.2f}"
        )
    print(
        "ms: medians of the whole call; exact: share of our queries answering numpy's ids in "
        "numpy's order; first: opening a user's Chroma database and its first query; ours "
        "first: our first query of the user (it reads the user's rows, then keeps them)"
    )
    return {
        "buckets": buckets,
        "embedded_ratio_vs_chroma": round(max(v["ratio"] for v in buckets.values()), 3),
        "embedded_exact_match": min(v["ours_exact_match"] for v in buckets.values()),
        "chroma_min_recall_at_10": min(v["chroma_mean_recall"] for v in buckets.values()),
    }


if __name__ == "__main__":
    main()
