"""The suite's spare PostgreSQL schemas (``tests/_spare_schemas.py``) are reused only clean.

A schema comes back for reuse only exactly as installed and emptied of every row; one a test
changed (an index, a rotated key) is dropped, so no test inherits another's state.
"""

from __future__ import annotations

from typing import Any

from _spare_schemas import Spares
from sqlalchemy import text

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope("acme", "alice")


def _open(urls: Any, schema: str) -> SQLBackend:
    return SQLBackend(urls.app, admin_url=urls.owner, schema=schema, embedding_dimension=None)


def _exists(admin: Any, schema: str) -> bool:
    with admin.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema})
        return found.first() is not None


def test_a_used_schema_comes_back_empty(postgres_urls: Any, postgres_admin: Any) -> None:
    spares = Spares(postgres_admin, postgres_urls.app, postgres_urls.owner)
    try:
        schema = spares.take()
        backend = _open(postgres_urls, schema)
        backend.upsert_memories(ALICE, [Memory("m1", "Alice's secret")])
        backend.close()
        spares.give_back(schema)
        assert spares.take() == schema and spares.reused == 2  # the reference, then this one
        again = _open(postgres_urls, schema)
        assert again.list_memories(ALICE) == []  # no row of the last test
        again.close()
    finally:
        spares.close()


def test_a_changed_schema_is_dropped(postgres_urls: Any, postgres_admin: Any) -> None:
    spares = Spares(postgres_admin, postgres_urls.app, postgres_urls.owner)
    try:
        changed = [spares.take(), spares.take()]  # the reference and a new one
        backends = [_open(postgres_urls, schema) for schema in changed]
        backends[0].setup()
        with postgres_admin.begin() as conn:
            conn.execute(text(f'CREATE INDEX extra ON "{changed[0]}".muxi_memories (id)'))
        backends[1].rotate_scope_key()
        for backend in backends:
            backend.close()
        for schema in changed:
            spares.give_back(schema)
            assert not _exists(postgres_admin, schema)
    finally:
        spares.close()
