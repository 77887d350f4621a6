"""The key that signs the row-level-security scope (PostgreSQL): reading it, and the
refusal that says the one we hold was rotated away."""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.exc import ProgrammingError

from ...errors import ConfigError, StorageError
from . import _rls
from ._schema import Tables

__all__ = ["StaleKey", "read_scope_key"]


def read_scope_key(conn: Connection, tables: Tables) -> bytes | None:
    """The key that signs the RLS scope (PostgreSQL), read as the tables' owner."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        return _rls.read_scope_key(conn, tables)
    except ProgrammingError as exc:  # the app's role, which may not read it
        raise ConfigError(
            "the app's role cannot read the row-level-security scope key: pass admin_url "
            "(the tables' owner) to SQLBackend"
        ) from exc


class StaleKey(StorageError):
    """``scope_enter`` refused our tag: the key we hold was rotated away."""

    def __init__(self) -> None:
        super().__init__("the row-level-security scope tag verifies under no current key")
