"""Spare PostgreSQL schemas for the suite: installing one costs more than most tests do.

A schema a test leaves exactly as it was installed (the same tables, columns, indexes,
policies, functions, grants, key ids and schema version; only rows added) is emptied with
``DELETE`` and handed to the next test that opens a default PostgreSQL backend. Anything
else about it changed (a per-user index, a rotated key, a revoked grant, another
dimension): it is dropped, as every schema used to be. The reference is a schema installed
by this module itself, so "as installed" is never taken from a test.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from muxi_isolation.stores.sql import SQLBackend

__all__ = ["Spares"]

# The tables that hold no rows of a test's own: kept (their ids are in the fingerprint).
_SETTINGS_TABLES = ("muxi_schema_version", "muxi_scope_key")

_FINGERPRINT = text(
    """
    WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = :schema)
    SELECT md5(coalesce(string_agg(replace(x, :schema, '@'), '|' ORDER BY x), ''))
    FROM (
      SELECT 'c:' || c.relname || ':' || c.relkind::text || ':' || c.relowner::regrole::text
             || ':' || coalesce(c.relacl::text, '') || ':' || coalesce(c.reloptions::text, '')
             || ':' || c.relrowsecurity::text || c.relforcerowsecurity::text
      FROM pg_class c, ns WHERE c.relnamespace = ns.oid
      UNION ALL
      SELECT 'a:' || c.relname || ':' || a.attname || ':'
             || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid, ns
      WHERE c.relnamespace = ns.oid AND a.attnum > 0 AND NOT a.attisdropped
      UNION ALL
      SELECT 'i:' || indexdef FROM pg_indexes WHERE schemaname = :schema
      UNION ALL
      SELECT 'p:' || p.polname || ':' || p.polcmd::text || ':' || p.polroles::text || ':'
             || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ':'
             || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
      FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid, ns WHERE c.relnamespace = ns.oid
      UNION ALL
      SELECT 'f:' || p.proname || ':' || md5(p.prosrc) || ':' || coalesce(p.proacl::text, '')
             || ':' || coalesce(p.proconfig::text, '') || ':' || p.proowner::regrole::text
      FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
      UNION ALL
      SELECT 't:' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, ns
      WHERE c.relnamespace = ns.oid AND NOT t.tgisinternal
      UNION ALL
      SELECT 'n:' || coalesce(n.nspacl::text, '') || n.nspowner::regrole::text
      FROM pg_namespace n, ns WHERE n.oid = ns.oid
    ) q(x)
    """
)


class Spares:
    """One worker's spare default schemas (a default backend: ``embedding_dimension=None``)."""

    def __init__(self, admin: Engine, app: URL, owner: URL) -> None:
        self._admin, self._app, self._owner = admin, app, owner
        self._reference: str | None = None
        self._fingerprint = ""
        self._free: list[str] = []
        self.reused = 0

    def take(self) -> str:
        """A schema name for a new default backend: a spare if there is one."""
        if self._reference is None:
            self._reference = self._install_reference()
        if self._free:
            self.reused += 1
            return self._free.pop()
        return f"t_{secrets.token_hex(6)}"

    def give_back(self, schema: str) -> None:
        """After the test (its backends closed): empty the schema for reuse, or drop it."""
        with self._admin.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            if self._as_installed(conn, schema):
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE's new files
                # for every table and index cost ~6x as much (38 ms against 6 per test).
                # No table has a trigger, a foreign key or a sequence to restart.
                for table in self._data_tables(conn, schema):
                    conn.execute(text(f"DELETE FROM {table}"))
                self._free.append(schema)
                return
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def close(self) -> None:
        with self._admin.begin() as conn:
            for schema in self._free:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self._free.clear()

    def _install_reference(self) -> str:
        schema = f"t_{secrets.token_hex(6)}"
        backend = SQLBackend(
            self._app, admin_url=self._owner, schema=schema, embedding_dimension=None
        )
        try:
            backend.setup()
        finally:
            backend.close()
        with self._admin.connect() as conn:
            self._fingerprint = self._fingerprint_of(conn, schema)
        self._free.append(schema)
        return schema

    def _fingerprint_of(self, conn: Connection, schema: str) -> str:
        settings = [f'"{schema}".{name}' for name in _SETTINGS_TABLES]
        found = conn.execute(
            text("SELECT to_regclass(:a), to_regclass(:b)"), dict(zip("ab", settings, strict=True))
        ).one()
        if None in found:
            return "not installed"
        catalog = conn.execute(_FINGERPRINT, {"schema": schema}).scalar_one()
        versions = conn.execute(text(f"SELECT component, version FROM {settings[0]}")).all()
        keys = conn.execute(text(f"SELECT id FROM {settings[1]} ORDER BY id")).scalars().all()
        return f"{catalog}|{sorted(map(tuple, versions))}|{keys}"

    def _as_installed(self, conn: Connection, schema: str) -> bool:
        return self._fingerprint_of(conn, schema) == self._fingerprint

    @staticmethod
    def _data_tables(conn: Connection, schema: str) -> list[str]:
        names = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :schema ORDER BY 1"),
            {"schema": schema},
        ).scalars()
        return [f'"{schema}"."{n}"' for n in names if n not in _SETTINGS_TABLES]
