"""The SQL backend: SQLite (embedded default) and PostgreSQL + pgvector, one protocol.

SQLBackend(url, *, embedding_dimension=1536, admin_url=None, ...)
create_app_role(admin_url, role="muxi_app")     the non-owner role RLS needs
citus_ddl()                                     distribute the tables by tenant_id
resolve_url(url)                                a storage URL as the backend reads it
"""

from __future__ import annotations

from ._rls import create_app_role
from ._schema import SCHEMA_VERSION
from ._urls import resolve_url
from .backend import SQLBackend
from .citus import citus_ddl

__all__ = ["SCHEMA_VERSION", "SQLBackend", "citus_ddl", "create_app_role", "resolve_url"]
