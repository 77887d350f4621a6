"""What the app's role may do beyond its grants (PostgreSQL), read once at setup."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

__all__ = ["Probe", "probe_role"]


@dataclass(frozen=True)
class Probe:
    """What the app's role may do beyond its grants (PostgreSQL)."""

    role: str | None = None
    bypass: bool = False
    temp: bool = False
    owns: int = 0
    database: str = ""

    def warnings(self, *, owner: bool) -> list[str]:
        """Startup warnings, each naming its fix."""
        out: list[str] = []
        if self.temp and not self.bypass:
            out.append(
                f"the app's role {self.role!r} can create temporary tables, which could "
                "shadow tables on a pooled connection: run REVOKE TEMPORARY ON DATABASE "
                f'"{self.database}" FROM PUBLIC, "{self.role}" as the owner '
                "(create_app_role does this)"
            )
        if self.owns and owner:
            out.append(
                f"the app's role {self.role!r} owns {self.owns} object(s) in the database: "
                "an owner can change its own tables' policies; reassign them to the owner "
                f'(REASSIGN OWNED BY "{self.role}" TO <owner>)'
            )
        return out


_PROBE = text(
    "SELECT current_user, r.rolsuper OR r.rolbypassrls, "
    "has_database_privilege(current_database(), 'TEMPORARY'), "
    "(SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid AND c.relnamespace NOT IN "
    " (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg\\_%' OR nspname = "
    " 'information_schema')) "
    "+ (SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid), current_database() "
    "FROM pg_roles r WHERE r.rolname = current_user"
)


def probe_role(conn: Connection) -> Probe:
    """The connected role: whether it skips row-level security, may create temporary
    tables, or owns anything (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return Probe()
    row = conn.execute(_PROBE).one()
    return Probe(str(row[0]), bool(row[1]), bool(row[2]), int(row[3]), str(row[4]))
