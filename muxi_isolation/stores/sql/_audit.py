"""The audit table (``muxi_isolation.audit``): one hash chain per tenant, append-only for
the app.

    audit_events   PK (tenant_id, seq); ('' is the chain of events without a tenant)

Not one of the scoped tables: forgetting a user or a tenant keeps its events (they hold no
content), and row-level security does not apply. On PostgreSQL the app role gets no
privilege on the table at all, only ``EXECUTE`` on ``<prefix>audit_append``, a ``SECURITY
DEFINER`` function of the owner's that takes a per-tenant advisory lock, reads the chain's
head and inserts the next event with its hash: the app can append, never read, change or
delete. SQLite's writer lock (``BEGIN IMMEDIATE``) serializes the chain there. Reading and
pruning run as the owner (``admin_url``).
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from ...audit import GENESIS, AuditEvent, AuditQuery
from ._schema import Tables
from ._types import UTCDateTime

__all__ = ["append", "audit_table", "install", "prune", "read"]

_TABLES: dict[tuple[str, str | None], sa.Table] = {}


def audit_table(tables: Tables) -> sa.Table:
    """The audit table beside ``tables`` (same prefix and schema), in its own metadata."""
    key = (tables.prefix, tables.metadata.schema)
    if key not in _TABLES:
        p = tables.prefix
        table = sa.Table(
            f"{p}audit_events",
            sa.MetaData(schema=tables.metadata.schema),
            sa.Column("tenant_id", sa.String(255), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("at", UTCDateTime, nullable=False),
            sa.Column("user_id", sa.String(255), nullable=True),
            sa.Column("session_id", sa.String(255), nullable=True),
            sa.Column("actor", sa.String(255), nullable=False),
            sa.Column("interface", sa.String(32), nullable=False),
            sa.Column("operation", sa.String(64), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("targets", sa.Text, nullable=False),  # a JSON array of ids
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("tenant_id", "seq", name=f"{p}audit_events_pkey"),
        )
        sa.Index(f"{p}audit_events_by_time", table.c.at)
        _TABLES[key] = table
    return _TABLES[key]


def _function(conn: sa.Connection, tables: Tables) -> str:
    prep = conn.dialect.identifier_preparer
    schema = tables.metadata.schema or str(conn.scalar(sa.text("SELECT current_schema()")))
    return f"{prep.quote_schema(schema)}.{prep.quote(f'{tables.prefix}audit_append')}"


_ARGS = (
    "p_tenant text, p_at timestamptz, p_user text, p_session text, p_actor text, "
    "p_interface text, p_operation text, p_outcome text, p_targets text, p_body text"
)


def install(conn: sa.Connection, tables: Tables, *, app_role: str | None) -> None:
    """Create the table (and on PostgreSQL the append function) if missing; grant the app
    role (when the owner installs for one) ``EXECUTE`` on the function and nothing else."""
    table = audit_table(tables)
    if not sa.inspect(conn).has_table(table.name, schema=table.schema):
        table.create(conn)
    if conn.dialect.name != "postgresql":
        return
    prep = conn.dialect.identifier_preparer
    name, target = _function(conn, tables), prep.format_table(table)
    signature = f"{name}(text, timestamptz, {', '.join(['text'] * 8)})"
    if conn.scalar(sa.text("SELECT to_regprocedure(:f)"), {"f": signature}) is None:
        _create_function(conn, name, target)
        conn.execute(sa.text(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC"))
    if app_role is not None:
        grantee = prep.quote(app_role)
        conn.execute(sa.text(f"REVOKE ALL ON {target} FROM {grantee}"))
        conn.execute(sa.text(f"GRANT EXECUTE ON FUNCTION {signature} TO {grantee}"))


def _create_function(conn: sa.Connection, name: str, target: str) -> None:
    # Names come from check_name and are quoted; every value is one of the function's args.
    body = (
        "DECLARE v_seq bigint; v_prev text; BEGIN "  # noqa: S608
        "PERFORM pg_advisory_xact_lock(hashtextextended('muxi-audit:' || p_tenant, 0)); "
        f"SELECT seq, hash INTO v_seq, v_prev FROM {target} "
        "WHERE tenant_id = p_tenant ORDER BY seq DESC LIMIT 1; "
        f"IF v_seq IS NULL THEN v_seq := 0; v_prev := '{GENESIS}'; END IF; "
        f"INSERT INTO {target} (tenant_id, seq, at, user_id, session_id, actor, interface, "
        "operation, outcome, targets, prev_hash, hash) VALUES (p_tenant, v_seq + 1, p_at, "
        "p_user, p_session, p_actor, p_interface, p_operation, p_outcome, p_targets, v_prev, "
        "encode(sha256(convert_to(v_prev || p_body, 'UTF8')), 'hex')); END"
    )
    conn.execute(
        sa.text(
            f"CREATE FUNCTION {name}({_ARGS}) RETURNS void LANGUAGE plpgsql VOLATILE "
            f"SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ {body} $$"
        )
    )


def append(conn: sa.Connection, tables: Tables, event: AuditEvent) -> None:
    """Append ``event`` to its tenant's chain, in the caller's (short) transaction."""
    targets = json.dumps(list(event.targets), ensure_ascii=False)
    values = {
        "tenant_id": event.tenant_id or "",
        "at": event.at,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "actor": event.actor,
        "interface": event.interface,
        "operation": event.operation,
        "outcome": event.outcome,
        "targets": targets,
    }
    if conn.dialect.name == "postgresql":
        params = ", ".join(f":{k}" for k in values)
        conn.execute(
            sa.text(f"SELECT {_function(conn, tables)}({params}, :body)"),
            {**values, "body": event.body()},
        )
        return
    table = audit_table(tables)
    head = conn.execute(
        sa.select(table.c.seq, table.c.hash)
        .where(table.c.tenant_id == values["tenant_id"])
        .order_by(table.c.seq.desc())
        .limit(1)
    ).first()
    stored = event.chained(head[0] + 1, head[1]) if head else event.chained(1, GENESIS)
    conn.execute(
        sa.insert(table).values(
            **values, seq=stored.seq, prev_hash=stored.prev_hash, hash=stored.hash
        )
    )


def read(conn: sa.Connection, tables: Tables, query: AuditQuery) -> list[AuditEvent]:
    """The events ``query`` selects, oldest first (as the owner)."""
    t = audit_table(tables)
    statement = sa.select(t).order_by(t.c.at, t.c.tenant_id, t.c.seq)
    if query.tenant_id is not None:
        statement = statement.where(t.c.tenant_id == query.tenant_id)
    if query.user_id is not None:
        statement = statement.where(t.c.user_id == query.user_id)
    if query.since is not None:
        statement = statement.where(t.c.at >= query.since)
    if query.outcome is not None:
        statement = statement.where(t.c.outcome == query.outcome)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return [
        AuditEvent(
            row.at,
            row.tenant_id or None,
            row.user_id,
            row.session_id,
            row.actor,
            row.interface,
            row.operation,
            row.outcome,
            tuple(json.loads(row.targets)),
            row.seq,
            row.prev_hash,
            row.hash,
        )
        for row in conn.execute(statement)
    ]


def prune(conn: sa.Connection, tables: Tables, before: datetime) -> int:
    """Delete each chain's events up to its newest one older than ``before`` (as the
    owner): what is left of a chain still verifies from its first remaining event."""
    t = audit_table(tables)
    older = t.alias("older")
    cut = (
        sa.select(sa.func.max(older.c.seq))
        .where(older.c.tenant_id == t.c.tenant_id, older.c.at < before)
        .scalar_subquery()
    )
    return int(conn.execute(t.delete().where(t.c.seq <= cut)).rowcount)
