"""Reading a foreign store's tables: connect, check the table is there, stream its rows.

Table and column names are quoted by SQLAlchemy and checked against the catalog first;
values are bound. Connection failures and missing tables or columns are
``UnreadableSource``, raised by ``check`` before an import writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Engine,
    TableClause,
    Text,
    cast,
    column,
    create_engine,
    func,
    select,
    table,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ...errors import AdapterUnavailable, ConfigError, UnreadableSource
from ...stores.sql import resolve_url

__all__ = ["Database", "parse_vector", "vector_text"]


def parse_vector(value: Any) -> list[float] | None:
    """pgvector's text form (``[1,2.5,3]``) as floats; ``None`` stays ``None``."""
    if value is None:
        return None
    inner = str(value).strip().strip("[]")
    return [float(x) for x in inner.split(",")] if inner else []


def vector_text(name: str) -> Any:
    """A vector column read as text: no pgvector package needed, every float kept."""
    return cast(column(name), Text)


class Database:
    """A foreign PostgreSQL database, read-only; ``close`` disposes its engine."""

    def __init__(self, url: str | URL) -> None:
        try:
            target = resolve_url(url)
        except ConfigError as exc:
            raise UnreadableSource(f"not a database URL: {exc}") from exc
        if target.dialect != "postgresql":
            raise UnreadableSource("this source lives in PostgreSQL: give a postgresql:// URL")
        self.url = target.sync_url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = create_engine(self.url)
            except ModuleNotFoundError as exc:  # the driver is in the extra
                raise AdapterUnavailable("psycopg", "postgres") from exc
        return self._engine

    def where(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def columns(self, schema: str | None, name: str) -> set[str]:
        """The table's column names; empty when there is no such table."""
        query = text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = COALESCE(:schema, current_schema()) AND table_name = :name"
        )
        try:
            with self.engine.connect() as conn:
                return {str(c) for c in conn.scalars(query, {"schema": schema, "name": name})}
        except SQLAlchemyError as exc:
            raise UnreadableSource(f"cannot read {self.where()}: {exc}") from exc

    def require(
        self, schema: str | None, names: Sequence[str], needed: Iterable[str]
    ) -> tuple[TableClause, set[str]]:
        """The first of ``names`` that exists, with its columns; it must have ``needed``."""
        for name in names:
            found = self.columns(schema, name)
            if found:
                missing = set(needed) - found
                if missing:
                    raise UnreadableSource(
                        f"table {name!r} has no column(s) {sorted(missing)}: not the expected store"
                    )
                return table(name, *(column(c) for c in sorted(found)), schema=schema), found
        where = f"schema {schema!r}" if schema else "the default schema"
        raise UnreadableSource(f"no table {' or '.join(map(repr, names))} in {where}")

    def count(self, source: Any) -> int:
        return int(self.scalar(select(func.count()).select_from(source)))

    def scalar(self, query: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.scalar(query)
        except SQLAlchemyError as exc:
            raise UnreadableSource(f"cannot read {self.where()}: {exc}") from exc

    def stream(self, query: Any, batch: int = 1000) -> Iterator[Any]:
        """Rows of ``query`` through a server-side cursor, ``batch`` at a time."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            try:
                yield from result
            finally:
                result.close()  # also when the import stops halfway

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
