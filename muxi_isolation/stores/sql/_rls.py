"""Row-level security on PostgreSQL: the second wall behind the query filters.

Every scoped table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (so the owner obeys
the policies too; only superusers and ``BYPASSRLS`` roles skip them) and two policies:

- ``muxi_user``, for every role: a row is visible and writable only when its
  ``tenant_id`` and ``user_id`` equal the transaction's ``muxi.tenant_id`` and
  ``muxi.user_id`` settings. ``current_setting(name, true)`` is NULL when a setting was
  never made and ``''`` after a transaction-local one ended on a pooled connection; no id
  is ever NULL or ``''``, so an unset scope sees nothing.
- ``muxi_tenant_admin``, only for the role that created the tables (the owner, reached
  through ``admin_url``): with ``muxi.admin = 'on'`` it sees one whole tenant. The app's
  role is not in this policy, so setting ``muxi.admin`` does nothing for it.

The settings are made with ``set_config(name, value, true)`` at the start of each
transaction, as bound parameters, and end with it. On Citus, where only ``SET LOCAL``
statements reach the workers, ``SET LOCAL`` is used instead, its literal quoted by the
server (``format('%L')``), never by us.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.engine import URL

from ...errors import ConfigError
from ...scope import Scope

if TYPE_CHECKING:
    from ._schema import Tables

__all__ = [
    "ADMIN",
    "TENANT",
    "USER",
    "apply_settings",
    "create_app_role",
    "grants",
    "policies",
    "scope_settings",
]

TENANT = "muxi.tenant_id"
USER = "muxi.user_id"
ADMIN = "muxi.admin"

_USER_RULE = (
    f"tenant_id = current_setting('{TENANT}', true) AND user_id = current_setting('{USER}', true)"
)
_ADMIN_RULE = (
    f"tenant_id = current_setting('{TENANT}', true) AND current_setting('{ADMIN}', true) = 'on'"
)


def policies(conn: Connection, tables: Tables) -> list[str]:
    """RLS DDL for the scoped tables; the admin policy names the current (owner) role."""
    prep = conn.dialect.identifier_preparer
    owner = prep.quote(str(conn.scalar(text("SELECT current_user"))))
    out: list[str] = []
    for table in tables.scoped:
        name = prep.format_table(table)
        out += [
            f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY muxi_user ON {name} USING ({_USER_RULE}) WITH CHECK ({_USER_RULE})",
            f"CREATE POLICY muxi_tenant_admin ON {name} TO {owner} "
            f"USING ({_ADMIN_RULE}) WITH CHECK ({_ADMIN_RULE})",
        ]
    return out


def grants(conn: Connection, tables: Tables, role: str) -> list[str]:
    """The app role's privileges: DML on the scoped tables, read on the version table."""
    prep = conn.dialect.identifier_preparer
    grantee = prep.quote(role)
    out: list[str] = []
    if tables.metadata.schema is not None:
        schema = prep.quote_schema(tables.metadata.schema)
        out.append(f"GRANT USAGE ON SCHEMA {schema} TO {grantee}")
    scoped = ", ".join(prep.format_table(t) for t in tables.scoped)
    out.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {scoped} TO {grantee}")
    out.append(f"GRANT SELECT ON {prep.format_table(tables.version)} TO {grantee}")
    return out


def scope_settings(user: Scope) -> dict[str, str]:
    return {TENANT: user.tenant_id, USER: user.user_id}


def apply_settings(conn: Connection, settings: Mapping[str, str], *, set_local: bool) -> None:
    """Make transaction-local settings: ``set_config`` (bound) or server-quoted ``SET LOCAL``."""
    if not settings:
        return
    if not set_local:
        conn.execute(select(*(func.set_config(k, v, True) for k, v in settings.items())))
        return
    quoted = conn.execute(
        select(*(func.format(f"SET LOCAL {k} = %L", v) for k, v in settings.items()))
    ).one()
    for statement in quoted:
        conn.exec_driver_sql(str(statement), execution_options={"no_parameters": True})


def create_app_role(
    admin_url: str | URL, role: str = "muxi_app", password: str | None = None
) -> str:
    """Create (or check) the login role the app connects as: no superuser, no BYPASSRLS.

    Run once with an owner or superuser URL; then open the backend with the app role's URL
    and ``admin_url`` (see the README's Storage section). Returns the role name.
    """
    from ._urls import resolve_url

    target = resolve_url(admin_url)
    if target.dialect != "postgresql":
        raise ConfigError("create_app_role is for PostgreSQL")
    engine = create_engine(target.sync_url)
    try:
        with engine.begin() as conn:
            found = conn.execute(
                text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :r"),
                {"r": role},
            ).first()
            if found is not None and found[0]:
                raise ConfigError(f"role {role!r} bypasses row-level security")
            verb = "ALTER" if found is not None else "CREATE"
            template = f"{verb} ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT"
            args: list[str] = [role]
            if password is not None:
                template += " PASSWORD %L"
                args.append(password)
            statement = conn.scalar(select(func.format(template, *args)))
            conn.exec_driver_sql(str(statement), execution_options={"no_parameters": True})
    finally:
        engine.dispose()
    return role
