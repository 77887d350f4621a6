"""Fixed statements compiled once to the driver's own SQL (the history's hot writes), run
through SQLAlchemy's ``exec_driver_sql`` or on a DB-API cursor itself (``Driver.on``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, CursorResult, Table
from sqlalchemy.engine import Dialect

__all__ = ["Driver", "Processors", "batch_sql", "bind_processor", "dialect_of"]

# A column type's bind processor on a dialect (``bind_processor``, or a faster equivalent).
Processors = Callable[[Any, Dialect], "Callable[[Any], Any] | None"]


def dialect_of(conn: Connection | Dialect) -> Dialect:
    return conn.dialect if isinstance(conn, Connection) else conn


def bind_processor(kind: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor SQLAlchemy itself applies: the dialect's type's (the generic
    type's left SQLite's datetimes to sqlite3's adapter, which drops a zero microsecond)."""
    processor: Callable[[Any], Any] | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


def batch_sql(
    conn: Connection | Dialect,
    stmt: Any,
    table: Table,
    keys: Sequence[str],
    processors: Processors = bind_processor,
) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]:
    """A batch write of ``table``'s ``keys`` as the driver's SQL, its parameters in the
    driver's order each with its column's bind processor, for one ``exec_driver_sql``
    executemany (SQLite): SQLAlchemy's per-row parameter handling was most of a batch."""
    dialect = dialect_of(conn)
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup or []
    return str(compiled), [(n, processors(table.c[n].type, dialect)) for n in names]


@dataclass(frozen=True)
class Driver:
    """A fixed statement compiled once to the driver's SQL, with its parameters' names in
    the driver's order and their bind processors: run through ``exec_driver_sql``, it skips
    SQLAlchemy's per-execution compile-cache lookup and parameter handling (most of each
    statement's cost on SQLite). Still one of SQLAlchemy's executions: events, error mapping."""

    sql: str
    names: tuple[str, ...]
    positional: bool  # qmark (SQLite); else named parameters (PostgreSQL's drivers)
    processors: dict[str, Callable[[Any], Any]]
    defaults: dict[str, Any] = field(default_factory=dict)  # the statement's own values

    @classmethod
    def of(
        cls, conn: Connection | Dialect, stmt: Any, processors: Processors = bind_processor
    ) -> Driver:
        dialect = dialect_of(conn)
        compiled = stmt.compile(dialect=dialect)
        found, defaults = {}, {}
        for name, bind in compiled.binds.items():
            processor = processors(bind.type, dialect)
            if processor is not None:
                found[name] = processor
            if not bind.required:  # a literal, or a parameter made with a value
                defaults[name] = bind.value
        order = compiled.positiontup
        names = tuple(compiled.binds if order is None else order)
        return cls(str(compiled), names, order is not None, found, defaults)

    def params(self, params: dict[str, Any]) -> Any:
        """The driver's parameters (``params`` over the statement's own): processed, in its
        order (or by name)."""
        if self.defaults:
            params = {**self.defaults, **params}
        for name, processor in self.processors.items():
            params[name] = processor(params[name])
        if self.positional:
            return tuple(params[n] for n in self.names)
        return {n: params[n] for n in self.names}

    def run(self, conn: Connection, params: dict[str, Any]) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(params))

    def on(self, cursor: Any, params: dict[str, Any]) -> Any:
        """Executed on a DB-API cursor itself: no SQLAlchemy execution at all (no events;
        the caller maps the driver's errors)."""
        cursor.execute(self.sql, self.params(params))
        return cursor
