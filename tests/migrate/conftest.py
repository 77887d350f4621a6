"""Fixtures for the migration tests: fresh source databases beside the suite's PostgreSQL.

Source stores (langchain-postgres, llama-index) are real and live in a database of their
own, created for the test and dropped after it, so their tables never meet ours.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


@pytest.fixture
def source_db(postgres_urls: Any, postgres_admin: Any) -> Iterator[str]:
    """A new, empty PostgreSQL database (with pgvector) as a libpq URI; dropped afterwards."""
    name = f"src_{secrets.token_hex(6)}"
    with postgres_admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_urls.admin).set(database=name)
    engine = create_engine(url.set(drivername="postgresql+psycopg"), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    engine.dispose()
    yield url.render_as_string(hide_password=False)
    with postgres_admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sql_url() -> Callable[[str, str], str]:
    """The same database under another SQLAlchemy driver (psycopg, asyncpg)."""

    def convert(url: str, driver: str) -> str:
        return (
            make_url(url)
            .set(drivername=f"postgresql+{driver}")
            .render_as_string(hide_password=False)
        )

    return convert
