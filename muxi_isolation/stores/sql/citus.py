"""DDL to distribute the tables on Citus, by ``tenant_id``, co-located.

Every primary key starts with ``tenant_id`` and every statement the backend sends names
``tenant_id`` by equality, so once distributed each statement is a single-shard router
query. Run the statements as the owner after the tables exist (``SQLBackend.setup()``).
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql

from ._rls import key_table
from ._schema import build_tables

__all__ = ["citus_ddl"]


def citus_ddl(*, table_prefix: str = "muxi_", schema: str | None = None) -> list[str]:
    """``create_distributed_table`` for each scoped table, the first anchoring the group;
    the scope key and the version table become reference tables."""
    tables = build_tables(table_prefix, schema)
    prep = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    anchor = prep.format_table(tables.sessions)
    out = [f"SELECT create_distributed_table('{anchor}', 'tenant_id')"]
    for table in tables.scoped[1:]:
        name = prep.format_table(table)
        out.append(
            f"SELECT create_distributed_table('{name}', 'tenant_id', colocate_with => '{anchor}')"
        )
    # The scope key must exist where the policies run: on every worker.
    out.append(f"SELECT create_reference_table('{prep.format_table(key_table(tables))}')")
    out.append(f"SELECT create_reference_table('{prep.format_table(tables.version)}')")
    return out
