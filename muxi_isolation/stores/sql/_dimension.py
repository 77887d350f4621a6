"""The memories' embedding dimension: set by the first write, recorded, changed on purpose.

``embedding_dimension="auto"`` (the default) takes the dimension from the first vector
written, so whatever embeddings the app uses fit without configuration. It is recorded where
the database keeps it: PostgreSQL in the column's type (``VECTOR(n)``),
SQLite in a row of the version table. A later vector of another length, or a configured
dimension that differs from the recorded one, is refused with a message that says what is
stored, what was sent, and the command that changes it:

    muxi-isolation embedding-dimension N --clear     (stored vectors are dropped: re-embed)

The precision (PostgreSQL: ``VECTOR`` or ``HALFVEC``) is fixed when the table is created
and read back from the column's type; a configuration that disagrees is refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update

from ...errors import ConfigError, InvalidInput
from . import _rls
from ._schema import Tables, hnsw_name

__all__ = [
    "AUTO",
    "change_hint",
    "fix_dimension",
    "mismatch",
    "read_dimension",
    "read_precision",
    "set_dimension",
]

AUTO = "auto"
_SETTING = "muxi-isolation:embedding_dimension"  # the SQLite record, a version-table row


def change_hint(dimension: int) -> str:
    return (
        f"run `muxi-isolation embedding-dimension {dimension} --clear` to change it "
        "(stored vectors are dropped; embed them again)"
    )


def mismatch(stored: int, sent: int, what: str = "embedding") -> InvalidInput:
    return InvalidInput(
        f"this store holds {stored}-dimension embeddings; this {what} has {sent}: "
        + change_hint(sent),
        field="embedding",
    )


def read_dimension(conn: Connection, tables: Tables) -> int | None:
    """The recorded dimension, or ``None`` when no vector fixed one yet."""
    if conn.dialect.name == "postgresql":
        mod = conn.scalar(
            text(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(:t) "
                "AND attname = 'embedding'"
            ),
            {"t": conn.dialect.identifier_preparer.format_table(tables.memories)},
        )
        return int(mod) if mod is not None and int(mod) > 0 else None
    v = tables.version
    found = conn.scalar(select(v.c.version).where(v.c.component == _SETTING))
    if found is not None:
        return int(found)
    m = tables.memories  # a file written before the record existed: its vectors tell
    packed = conn.scalar(select(func.length(m.c.embedding)).where(m.c.embedding.is_not(None)))
    return None if packed is None else int(packed) // 4


def read_precision(conn: Connection, tables: Tables) -> str | None:
    """PostgreSQL: "full" or "half" as the column's type says; ``None`` elsewhere."""
    if conn.dialect.name != "postgresql":
        return None
    name = conn.scalar(
        text(
            "SELECT t.typname FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(:t) AND a.attname = 'embedding'"
        ),
        {"t": conn.dialect.identifier_preparer.format_table(tables.memories)},
    )
    return "half" if name == "halfvec" else "full"


def fix_dimension(conn: Connection, tables: Tables, dimension: int) -> int:
    """As the owner, record ``dimension`` unless one is recorded already; the recorded one."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(0x6D757869)))  # one fixer at a time
    stored = read_dimension(conn, tables)
    if stored is not None:
        return stored
    _record(conn, tables, dimension)
    return dimension


def set_dimension(conn: Connection, tables: Tables, dimension: int, *, clear: bool) -> int:
    """As the owner, change the recorded dimension; stored vectors are dropped with
    ``clear`` and refuse the change without it. Returns how many vectors were dropped."""
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
        raise ConfigError("the embedding dimension must be a positive integer")
    held = _count_vectors(conn, tables)
    if held and not clear:
        raise ConfigError(
            f"{held} stored vector(s) have another dimension: add --clear to drop them "
            "(then embed them again)"
        )
    if held:
        _clear_vectors(conn, tables)
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"DROP INDEX IF EXISTS {hnsw_name(conn, tables)}"))
    _record(conn, tables, dimension)
    return held


def _record(conn: Connection, tables: Tables, dimension: int) -> None:
    if conn.dialect.name == "postgresql":
        name = conn.dialect.identifier_preparer.format_table(tables.memories)
        kind = "halfvec" if tables.precision == "half" else "vector"
        conn.execute(text(f"ALTER TABLE {name} ALTER COLUMN embedding TYPE {kind}({dimension})"))
        return  # HNSW indexes come per user, when one needs it (``_ann_index``)
    v = tables.version
    now = datetime.now(timezone.utc)
    changed = conn.execute(
        update(v).where(v.c.component == _SETTING).values(version=dimension, updated_at=now)
    )
    if not changed.rowcount:
        conn.execute(insert(v).values(component=_SETTING, version=dimension, updated_at=now))


def _count_vectors(conn: Connection, tables: Tables) -> int:
    m = tables.memories
    total = 0
    for tenant in _tenants(conn, tables):
        where = [m.c.embedding.is_not(None), *_visit(conn, tables, tenant)]
        total += int(conn.scalar(select(func.count()).select_from(m).where(*where)) or 0)
    return total


def _clear_vectors(conn: Connection, tables: Tables) -> None:
    m = tables.memories
    for tenant in _tenants(conn, tables):
        where = [m.c.embedding.is_not(None), *_visit(conn, tables, tenant)]
        conn.execute(update(m).where(*where).values(embedding=None))


def _tenants(conn: Connection, tables: Tables) -> list[str | None]:
    if conn.dialect.name != "postgresql":
        return [None]
    _rls.apply_settings(conn, {_rls.ADMIN: _rls.LIST_TENANTS}, set_local=False)
    m = tables.memories
    return [str(t) for t in conn.scalars(select(m.c.tenant_id).distinct())]


def _visit(conn: Connection, tables: Tables, tenant: str | None) -> list[Any]:
    """Open one tenant to the owner; the predicate that keeps a superuser (who skips the
    policies) to that tenant too."""
    if tenant is None:
        return []
    _rls.apply_settings(conn, {_rls.TENANT: tenant, _rls.ADMIN: "on"}, set_local=False)
    return [tables.memories.c.tenant_id == tenant]
