"""SQLite: an unfiltered search of a kept user reads one version row and returns the rows
as stored, from the copy (``_vector_cache``), never stale and never another user's.

Writes that must be seen come from outside the searching backend (the plain ``sqlite3``
module, as another process would). Each check runs on both halves.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from _watch import sqlite_trace
from sqlalchemy import text

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SCHEMA_VERSION, SQLBackend, _schema

ALICE = Scope("tenant_a", "alice")
ALICE_B = Scope("tenant_b", "alice")  # same user id, other tenant
QUERY = [1.0, 0.5, 0.0, 0.25]


def memories(tag: str) -> list[Memory]:
    made = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # a whole second: no .000000
    return [
        Memory(f"m{i}", f"{tag} {i}", {"n": i, "deep": {"tag": [tag]}}, [1.0, i, 0.5, -i], made)
        for i in range(6)
    ]


def both(backend: SQLBackend, user: Scope, k: int = 6) -> list[Memory]:
    sync = [m for m, _ in backend.search_memories(user, QUERY, k)]
    found = [m for m, _ in asyncio.run(backend.asearch_memories(user, QUERY, k))]
    assert found == sync
    return sync


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kept.db"


@pytest.fixture
def backend(path: Path) -> Iterator[SQLBackend]:
    store = SQLBackend(f"sqlite:///{path}")
    yield store
    store.close()


def test_a_kept_users_search_reads_the_version_and_nothing_else(backend: SQLBackend) -> None:
    backend.upsert_memories(ALICE, memories("a"))
    both(backend, ALICE)  # reads the rows once and keeps them
    for half in ("sync", "async"):
        with sqlite_trace(backend) as seen:
            if half == "sync":
                backend.search_memories(ALICE, QUERY, 3)
            else:
                asyncio.run(backend.asearch_memories(ALICE, QUERY, 3))
        selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1 and "memory_versions" in selects[0], seen


def test_kept_results_are_the_stored_rows_and_a_caller_cannot_change_them(
    backend: SQLBackend,
) -> None:
    session = Scope("tenant_a", "alice", "sess_kept")
    backend.upsert_memories(session, memories("a"))
    first = both(backend, ALICE)
    stored = backend.get_memories(ALICE, [m.id for m in first])  # read by the SQL path
    assert first == stored and first[0].scope == session
    assert first[0].created_at == datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    first[0].metadata["n"] = "changed by the caller"
    first[0].metadata["deep"]["tag"].append("x")
    assert both(backend, ALICE) == stored  # the copy holds text, not the caller's objects


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE muxi_memories SET content = 'redacted' WHERE id = 'm1'",
        "UPDATE muxi_memories SET metadata = '{\"n\": 99}' WHERE id = 'm1'",
        "UPDATE muxi_memories SET created_at = '2027-01-01 00:00:00.000000' WHERE id = 'm1'",
        "UPDATE muxi_memories SET session_id = 'sess_moved' WHERE id = 'm1'",
    ],
)
def test_a_change_of_any_column_elsewhere_is_seen_at_once(
    backend: SQLBackend, path: Path, change: str
) -> None:
    backend.upsert_memories(ALICE, memories("a"))
    before = {m.id: m for m in both(backend, ALICE)}
    with sqlite3.connect(path) as raw:  # behind the backend's back: another process
        raw.execute(change + " AND tenant_id = 'tenant_a' AND user_id = 'alice'")
    found = {m.id: m for m in both(backend, ALICE)}
    assert found["m1"] == backend.get_memories(ALICE, ["m1"])[0] != before["m1"]


def test_two_tenants_users_of_one_id_keep_their_own_rows(backend: SQLBackend) -> None:
    backend.upsert_memories(ALICE, memories("a"))
    backend.upsert_memories(ALICE_B, memories("b"))  # the same memory ids
    for _ in range(2):  # read, then kept
        assert {m.content.split()[0] for m in both(backend, ALICE)} == {"a"}
        assert {m.content.split()[0] for m in both(backend, ALICE_B)} == {"b"}
        assert {m.scope for m in both(backend, ALICE_B)} == {ALICE_B}
    assert len(backend.vectors.cache) == 2


def test_a_version_7_store_is_upgraded_to_see_a_change_of_any_column(path: Path) -> None:
    old = SQLBackend(f"sqlite:///{path}")
    old.upsert_memories(ALICE, memories("a"))
    with old._admin_engines()[0].begin() as conn:  # undo 7 -> 8: the four-column trigger
        conn.execute(text("DROP TRIGGER main.muxi_memories_version_update"))
        bump = (
            "INSERT INTO muxi_memory_versions (tenant_id, user_id, version) "
            "VALUES ({0}.tenant_id, {0}.user_id, random()) ON CONFLICT (tenant_id, user_id) "
            "DO UPDATE SET version = excluded.version;"
        )
        conn.execute(
            text(
                "CREATE TRIGGER main.muxi_memories_version_update AFTER UPDATE OF tenant_id, "
                f"user_id, id, embedding ON muxi_memories BEGIN {bump.format('old')} "
                f"{bump.format('new')} END"
            )
        )
        v = old.tables.version
        conn.execute(v.update().where(v.c.component == _schema.COMPONENT).values(version=7))
    old.close()
    new = SQLBackend(f"sqlite:///{path}")
    try:
        new.setup()
        with new._admin_engines()[0].connect() as conn:
            assert _schema.read_version(conn, new.tables) == SCHEMA_VERSION
        both(new, ALICE)
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE muxi_memories SET content = 'redacted' WHERE id = 'm2'")
        assert {m.id: m.content for m in both(new, ALICE)}["m2"] == "redacted"
    finally:
        new.close()


def test_a_kept_row_stamped_for_another_scope_never_reaches_the_caller(
    backend: SQLBackend,
) -> None:
    """Rows from a kept copy are verified like rows read from the database: a copy that
    held another user's row (a bug in the cache) still hands it to nobody."""
    backend.upsert_memories(ALICE, memories("a"))
    both(backend, ALICE)
    kept = backend.vectors.cache._kept[("tenant_a", "alice")]
    planted = kept.ids.index("m1")
    kept.rows[planted] = ("tenant_b", "alice", *kept.rows[planted][2:])  # as if misfiled
    found = both(backend, ALICE)
    assert "m1" not in {m.id for m in found} and {m.scope for m in found} == {ALICE}
