"""Fixtures of the security suite.

``shared_backend(kind)`` opens a backend that lives for a whole test module (the suite's
``make_backend`` is per test): the attack tables run hundreds of read-only cases against
one filled store, and building a PostgreSQL schema per case would cost most of the run.
Tests that use it must leave the data as they found it (or fail loudly if they could not).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from muxi_isolation import Backend, MemoryBackend
from muxi_isolation.stores.sql import SQLBackend

SharedFactory = Callable[..., Backend]


@pytest.fixture(scope="module")
def shared_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedFactory]:
    opened: list[Backend] = []
    schemas: list[str] = []
    admin: list[Any] = []

    def make(kind: str, **options: Any) -> Backend:
        backend: Backend
        options.setdefault("embedding_dimension", None)
        if kind == "memory":
            backend = MemoryBackend()
        elif kind == "sqlite":
            path = tmp_path_factory.mktemp("shared") / "store.db"
            backend = SQLBackend(f"sqlite:///{path}", **options)
        elif kind == "postgres":
            urls = request.getfixturevalue("postgres_urls")
            admin[:] = [request.getfixturevalue("postgres_admin")]
            schema = f"s_{secrets.token_hex(6)}"
            schemas.append(schema)
            backend = SQLBackend(urls.app, admin_url=urls.admin, schema=schema, **options)
        else:
            raise ValueError(f"unknown backend kind {kind!r}")
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()
    if schemas:
        with admin[0].begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
