"""Row-level security on PostgreSQL: the second wall behind the query filters.

Every scoped table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (so the owner obeys
the policies too; only superusers and ``BYPASSRLS`` roles skip them) and two policies:

- ``muxi_user``, for every role: a row is visible and writable only when its
  ``tenant_id`` and ``user_id`` equal the transaction's *signed* scope. The backend opens
  each transaction with ``SELECT <prefix>scope_enter(tenant, user, tag)``, where ``tag`` is
  an HMAC-SHA256 of the two ids under a key only the tables' owner can read (the
  ``scope_key`` table, read by the backend through ``admin_url`` at setup). ``scope_enter``
  (SECURITY DEFINER) verifies the tag and sets ``muxi.tenant_id``, ``muxi.user_id`` and
  ``muxi.scope_tag`` transaction-locally, the last an HMAC *bound* to this backend process
  and this transaction's start under a binding key that never leaves the database. The
  backend's tag is only ever an argument, never a setting, so SQL running later on the
  connection finds nothing to replay, and a stashed bound tag verifies in no other
  transaction. The policy compares each row with ``(SELECT <prefix>scope_tenant())`` and
  ``(SELECT <prefix>scope_user())``: SECURITY DEFINER functions that return the setting
  only when the bound tag verifies, else NULL, and that run once per statement (an
  InitPlan), so a setting changed halfway through a statement is never seen. SQL running
  as the app role can change the settings (any role can), but cannot sign them: a scope it
  sets itself (``set_config``, ``SET``, ``RESET``) sees and writes nothing. An unset scope
  (NULL, or the ``''`` a pooled connection shows after a transaction-local setting ended)
  sees nothing either.
- ``muxi_tenant_admin``, only for the role that created the tables (the owner, reached
  through ``admin_url``): with ``muxi.admin = 'on'`` it sees one whole tenant. The app's
  role is not in this policy, so setting ``muxi.admin`` does nothing for it.
- ``muxi_tenant_list``, for the owner too, read-only: with ``muxi.admin = 'list'`` it
  reads every tenant, which maintenance needs to find the tenants (``list_tenants``, the
  expired-session purge) before working through each on the tenant path.

The settings end with their transaction. On Citus, where only ``SET LOCAL`` statements reach
the workers (which cannot check a binding made on the coordinator), ``citus=True`` sets the
three settings with ``SET LOCAL`` instead, the tag then a Citus-only HMAC that is not bound to
the transaction (the documented limit of that mode), its literal quoted by the server
(``format('%L')``), never by us.

The key rotates without downtime (``add_scope_key``, then ``drop_old_scope_keys``): every
key but the binding key verifies the backend's tag until dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    TextClause,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import URL

from ...errors import ConfigError
from ...scope import Scope

if TYPE_CHECKING:
    from ._schema import Tables

__all__ = [
    "ADMIN",
    "BINDING_KEY",
    "LIST_TENANTS",
    "SCOPE_TAG",
    "STALE_KEY_STATE",
    "TENANT",
    "USER",
    "add_scope_key",
    "apply_settings",
    "binding_key",
    "create_app_role",
    "create_scope_key",
    "drop_old_scope_keys",
    "enter_params",
    "enter_scope",
    "enter_statement",
    "grants",
    "key_table",
    "list_policies",
    "policies",
    "read_scope_key",
    "resign_policies",
    "scope_functions",
    "scope_tag",
]

TENANT = "muxi.tenant_id"
USER = "muxi.user_id"
SCOPE_TAG = "muxi.scope_tag"
ADMIN = "muxi.admin"
STALE_KEY_STATE = "MX001"  # scope_enter: the tag verifies under no key (rotated away)

LIST_TENANTS = "list"

_ADMIN_RULE = (
    f"tenant_id = current_setting('{TENANT}', true) AND current_setting('{ADMIN}', true) = 'on'"
)
_LIST_RULE = f"current_setting('{ADMIN}', true) = '{LIST_TENANTS}'"
CITUS = "citus"


def _hmac(message: str, key: str = "k") -> str:
    """HMAC-SHA256 (RFC 2104) in SQL, with the key row's precomputed pads."""
    return (
        f"encode(sha256({key}.outer_pad || sha256({key}.inner_pad || "
        f"convert_to({message}, 'UTF8'))), 'hex')"
    )


# The signed messages. No id holds a newline, so each names one (tenant, user) pair.
# - enter: what the backend signs; passed only as an argument of ``scope_enter`` and never
#   stored, so SQL running later on the connection has nothing to replay;
# - bound: what ``scope_enter`` sets, bound to this backend process and this transaction's
#   start (a stashed copy verifies in no other transaction);
# - citus: what ``citus=True`` sets with SET LOCAL (workers cannot verify a binding made on
#   the coordinator), a bearer tag: the documented limit of that mode.
_IDS = f"current_setting('{TENANT}', true) || chr(10) || current_setting('{USER}', true)"
_BINDING = (
    "pg_backend_pid()::text || chr(10) || "
    "(extract(epoch FROM transaction_timestamp()) * 1000000)::bigint::text"
)
_BOUND = _hmac(f"{_IDS} || chr(10) || {_BINDING}")
_CITUS = _hmac(f"{_IDS} || chr(10) || '{CITUS}'")


def key_table(tables: Tables, schema: str | None = None) -> Table:
    """The one-row table holding the scope key: the owner's alone (no grant to the app)."""
    return Table(
        f"{tables.prefix}scope_key",
        MetaData(schema=schema or tables.metadata.schema),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("key", LargeBinary, nullable=False),
        Column("inner_pad", LargeBinary, nullable=False),
        Column("outer_pad", LargeBinary, nullable=False),
    )


def _schema(conn: Connection, tables: Tables) -> str:
    """Where the tables live: the functions name it, as their search_path is pinned."""
    return tables.metadata.schema or str(conn.scalar(text("SELECT current_schema()")))


def _function(conn: Connection, tables: Tables, part: str) -> str:
    prep = conn.dialect.identifier_preparer
    name = prep.quote(f"{tables.prefix}scope_{part}")
    return f"{prep.quote_schema(_schema(conn, tables))}.{name}"


def _user_rule(conn: Connection, tables: Tables) -> str:
    tenant, user = _function(conn, tables, "tenant"), _function(conn, tables, "user")
    return f"tenant_id = (SELECT {tenant}()) AND user_id = (SELECT {user}())"


BINDING_KEY = 0  # the key row that binds a scope to its transaction; never leaves the database


def create_scope_key(conn: Connection, tables: Tables) -> list[str]:
    """Create the key table with a new random key, and the functions that verify a scope.

    Returns the DDL of the functions (run by the caller after this).
    """
    key_table(tables).create(conn)
    add_scope_key(conn, tables)
    return binding_key(conn, tables)


def binding_key(conn: Connection, tables: Tables) -> list[str]:
    """Row 0: the key ``scope_enter`` binds a scope to its transaction with. No backend reads
    it and no rotation drops it, so a transaction running across a rotation keeps its scope.
    Returns the DDL of the functions."""
    table = key_table(tables)
    if conn.scalar(select(table.c.id).where(table.c.id == BINDING_KEY)) is None:
        _insert_key(conn, table, BINDING_KEY)
    return scope_functions(conn, tables)


def _insert_key(conn: Connection, table: Table, number: int) -> None:
    key = secrets.token_bytes(32)
    padded = key.ljust(64, b"\0")
    conn.execute(
        insert(table).values(
            id=number,
            key=key,
            inner_pad=bytes(b ^ 0x36 for b in padded),
            outer_pad=bytes(b ^ 0x5C for b in padded),
        )
    )


def add_scope_key(conn: Connection, tables: Tables) -> int:
    """A new random key, newest of the table: the backends sign with it from their next
    start (or their next refused scope); the older keys stay valid until dropped."""
    table = key_table(tables)
    newest = int(conn.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0) + 1
    _insert_key(conn, table, newest)
    return newest


def drop_old_scope_keys(conn: Connection, tables: Tables) -> int:
    """Keep only the newest key (and the binding key); returns how many were dropped."""
    table = key_table(tables)
    newest = select(func.max(table.c.id)).scalar_subquery()
    old = conn.execute(table.delete().where(table.c.id > BINDING_KEY, table.c.id < newest))
    return old.rowcount


def scope_functions(conn: Connection, tables: Tables) -> list[str]:
    """DDL of ``scope_enter`` (verify the backend's tag, set the transaction's bound scope)
    and of ``scope_tenant``/``scope_user`` (the scope, only while its bound tag verifies)."""
    keys = conn.dialect.identifier_preparer.format_table(key_table(tables, _schema(conn, tables)))
    header = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
    tag = f"current_setting('{SCOPE_TAG}', true)"
    signed = (
        f"(k.id = {BINDING_KEY} AND {tag} = {_BOUND}) "
        f"OR (k.id > {BINDING_KEY} AND {tag} = {_CITUS})"
    )
    out: list[str] = []
    for part, name in (("tenant", TENANT), ("user", USER)):
        q = f"SELECT current_setting('{name}', true) FROM {keys} k WHERE {signed} LIMIT 1"  # noqa: S608
        out.append(
            f"CREATE OR REPLACE FUNCTION {_function(conn, tables, part)}() RETURNS text "
            f"LANGUAGE sql STABLE {header} AS $$ {q} $$"
        )
    verify = _hmac("t || chr(10) || u", "x")
    check = f"PERFORM 1 FROM {keys} x WHERE x.id > {BINDING_KEY} AND {verify} = tag"
    bind = f"SELECT * INTO k FROM {keys} x WHERE x.id = {BINDING_KEY}"  # noqa: S608
    body = (
        f"DECLARE k record; BEGIN {check}; "
        "IF NOT FOUND THEN RAISE EXCEPTION 'muxi: the scope tag does not verify' "
        f"USING ERRCODE = '{STALE_KEY_STATE}'; END IF; "
        f"{bind}; "
        f"PERFORM set_config('{TENANT}', t, true), set_config('{USER}', u, true); "
        f"PERFORM set_config('{SCOPE_TAG}', {_BOUND}, true); END"
    )
    enter = _function(conn, tables, "enter")
    out.append(
        f"CREATE OR REPLACE FUNCTION {enter}(t text, u text, tag text) RETURNS void "
        f"LANGUAGE plpgsql VOLATILE {header} AS $$ {body} $$"
    )
    return out


def read_scope_key(conn: Connection, tables: Tables) -> bytes:
    """The newest scope key; only the owner (or a superuser) can read it."""
    table = key_table(tables)
    newest = conn.execute(select(table.c.key).order_by(table.c.id.desc()).limit(1))
    return bytes(newest.scalar_one())


def _owned(conn: Connection, tables: Tables, only: Sequence[Table] | None) -> tuple[str, list[str]]:
    """The current (owner) role, and the scoped tables (or ``only`` these), quoted."""
    prep = conn.dialect.identifier_preparer
    owner = prep.quote(str(conn.scalar(text("SELECT current_user"))))
    return owner, [prep.format_table(t) for t in (tables.scoped if only is None else only)]


def policies(conn: Connection, tables: Tables, only: Sequence[Table] | None = None) -> list[str]:
    """RLS DDL for the scoped tables (or ``only`` these, when a step adds tables); the admin
    policy names the current (owner) role."""
    owner, names = _owned(conn, tables, only)
    rule = _user_rule(conn, tables)
    out: list[str] = []
    for name in names:
        out += [
            f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY muxi_user ON {name} USING ({rule}) WITH CHECK ({rule})",
            f"CREATE POLICY muxi_tenant_admin ON {name} TO {owner} "
            f"USING ({_ADMIN_RULE}) WITH CHECK ({_ADMIN_RULE})",
        ]
    return out + list_policies(conn, tables, only)


def list_policies(
    conn: Connection, tables: Tables, only: Sequence[Table] | None = None
) -> list[str]:
    """The owner's read-only view of every tenant (schema version 3), created afresh."""
    owner, names = _owned(conn, tables, only)
    out: list[str] = []
    for name in names:
        out += [
            f"DROP POLICY IF EXISTS muxi_tenant_list ON {name}",
            f"CREATE POLICY muxi_tenant_list ON {name} FOR SELECT TO {owner} USING ({_LIST_RULE})",
        ]
    return out


def resign_policies(conn: Connection, tables: Tables) -> list[str]:
    """Move existing ``muxi_user`` policies (schema version 1) to the signed scope."""
    prep = conn.dialect.identifier_preparer
    rule = _user_rule(conn, tables)
    return [
        f"ALTER POLICY muxi_user ON {prep.format_table(t)} USING ({rule}) WITH CHECK ({rule})"
        for t in tables.scoped
    ]


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


def scope_tag(key: bytes, user: Scope, *, citus: bool = False) -> str:
    """The HMAC by which the backend proves a (tenant, user) scope: to ``scope_enter``, or
    (``citus``) set directly for the workers."""
    message = f"{user.tenant_id}\n{user.user_id}" + (f"\n{CITUS}" if citus else "")
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def enter_statement(conn: Connection, tables: Tables) -> TextClause:
    """``SELECT <schema>.<prefix>scope_enter(:t, :u, :tag)``: one statement opens the scope."""
    return text(f"SELECT {_function(conn, tables, 'enter')}(:t, :u, :tag)")


def enter_scope(
    conn: Connection, statement: TextClause, user: Scope, key: bytes, *, citus: bool
) -> None:
    """Open the transaction's scope: through ``scope_enter`` (bound to the transaction), or
    with ``citus``, as SET LOCAL settings carrying the Citus tag."""
    if citus:
        tag = scope_tag(key, user, citus=True)
        settings = {TENANT: user.tenant_id, USER: user.user_id, SCOPE_TAG: tag}
        apply_settings(conn, settings, set_local=True)
        return
    conn.execute(statement, enter_params(user, key))


def enter_params(user: Scope, key: bytes) -> dict[str, str]:
    """``enter_statement``'s parameters for ``user``: the ids and their signed tag."""
    return {"t": user.tenant_id, "u": user.user_id, "tag": scope_tag(key, user)}


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
    admin_url: str | URL,
    role: str = "muxi_app",
    password: str | None = None,
    *,
    revoke_temporary: bool = True,
) -> str:
    """Create (or check) the login role the app connects as: no superuser, no BYPASSRLS,
    and no temporary tables.

    Run once with an owner or superuser URL; then open the backend with the app role's URL
    and ``admin_url`` (see docs/rls.md). Returns the role name.

    PostgreSQL grants ``TEMPORARY`` on every database to ``PUBLIC``; a temporary table can
    shadow a table whose name a statement does not qualify. The library qualifies every name,
    and still takes ``TEMPORARY`` from ``PUBLIC`` and the role (``revoke_temporary=False``
    keeps it, e.g. when other roles of the database need temporary tables: grant it to them
    by name instead).
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
            statements: list[tuple[str, list[str]]] = [(template, args)]
            if revoke_temporary:
                database = str(conn.scalar(text("SELECT current_database()")))
                revoke = "REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I"
                statements.append((revoke, [database, role]))
            for pattern, values in statements:
                statement = conn.scalar(select(func.format(pattern, *values)))
                conn.exec_driver_sql(str(statement), execution_options={"no_parameters": True})
    finally:
        engine.dispose()
    return role
