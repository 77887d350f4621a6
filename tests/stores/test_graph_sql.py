"""Graph storage on SQL: every statement names one tenant (Citus), and the 3 -> 4 upgrade."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import event, inspect, text

from muxi_isolation import Scope
from muxi_isolation.filters import parse_filter
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    MatchRule,
    StoreItem,
    WriteRecord,
)
from muxi_isolation.stores.sql import SQLBackend, _schema

NOW = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
TENANTS = {"tenant_a", "tenant_b"}
_TENANT_EQ = re.compile(r"\btenant_id = (%\((\w+)\)s|\?)")


async def graph_workload(backend: SQLBackend, user: Scope) -> None:
    cp = CheckpointRecord("t1", "", "c1", None, "bytes", b"x", {"step": 1})
    backend.put_checkpoint(user, cp)
    await backend.aput_checkpoint(user, CheckpointRecord("t1", "", "c2", "c1", "bytes", b"y"))
    writes = [WriteRecord("t1", "", "c1", "task", i, "ch", "bytes", b"w") for i in range(2)]
    backend.put_checkpoint_writes(user, writes, replace=False)
    await backend.aput_checkpoint_writes(user, writes[:1], replace=True)
    backend.get_checkpoints(user, CheckpointQuery(filter=parse_filter({"step": 1})))
    await backend.aget_checkpoints(user, CheckpointQuery("t1", "", before="c2", limit=1))
    item = StoreItem(("a", "b"), "k", {"n": 1}, NOW, NOW, None, 5.0, {"$": [1.0, 0.0]})
    backend.put_items(user, [item], [(("a",), "gone")])
    await backend.aput_items(user, [item], [])
    backend.get_items(user, [(("a", "b"), "k")], now=NOW)
    backend.search_items(user, ItemQuery(("a",), parse_filter({"n": 1}), 5, 0), now=NOW)
    await backend.asearch_items(user, ItemQuery(("a",), vectors=True), now=NOW)
    backend.refresh_items(user, [item], now=NOW)
    backend.list_namespaces(user, [MatchRule("suffix", ("*", "b"))], now=NOW)
    await backend.alist_namespaces(user, [MatchRule("prefix", ("a",))], now=NOW)
    backend.copy_thread(user, "t1", "t2")
    await backend.acopy_thread(user, "t2", "t3")
    whole = parse_filter({"step": {"$exists": True}})
    backend.prune_threads(user, ["t2"], keep_latest=True, whole_if=whole)
    await backend.aprune_threads(user, ["t3"], keep_latest=False)
    backend.delete_checkpoints(user, CheckpointQuery(filter=parse_filter({"step": 1})))
    await backend.adelete_checkpoints(user, CheckpointQuery("t2", before="c2"))
    backend.delete_thread(user, "t1")
    backend.forget_user(user)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_every_graph_statement_names_one_tenant(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    backend.setup()
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((statement, parameters))

    writer, awriter = backend._writers  # SQLite writes on engines of their own
    for engine in {backend._engine, backend._aengine.sync_engine, writer, awriter.sync_engine}:
        event.listen(engine, "before_cursor_execute", record)
    await graph_workload(backend, Scope("tenant_a", "alice"))
    await graph_workload(backend, Scope("tenant_b", "bob"))
    names = [t.name for t in backend.tables.graph.all]
    checked = [(s, p) for s, p in seen if any(n in s for n in names)]
    assert len(checked) > 30
    for statement, parameters in checked:
        assert " LIKE " not in statement.upper()
        upper = statement.lstrip().upper()
        if upper.startswith("INSERT") and " SELECT " not in upper:  # INSERT ... SELECT: below
            rows = parameters if isinstance(parameters, list) else [parameters]
            for row in rows:
                if isinstance(row, dict):
                    assert {v for k, v in row.items() if k.startswith("tenant_id")} <= TENANTS
            continue
        found = _TENANT_EQ.findall(statement)
        assert found, f"no tenant_id equality in: {statement}"
        for _, name in found:
            if name and isinstance(parameters, dict):
                assert parameters[name] in TENANTS, statement


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_version_3_database_gains_the_graph_tables(make_backend, kind: str) -> None:
    first = make_backend(kind)
    first.setup()
    with first._admin_engines()[0].begin() as conn:
        for table in reversed(first.tables.graph.all):
            table.drop(conn)
        conn.execute(first.tables.version.update().values(version=3))
    with first._admin_engines()[0].connect() as conn:
        items = first.tables.graph.items
        assert not inspect(conn).has_table(items.name, schema=items.schema)
    first._ready = False  # open the same database again: the upgrade runs
    first.setup()
    with first._admin_engines()[0].connect() as conn:
        assert _schema.read_version(conn, first.tables) == _schema.SCHEMA_VERSION
        if kind == "postgres":
            policies = conn.execute(
                text("SELECT policyname FROM pg_policies WHERE tablename = :t"),
                {"t": first.tables.graph.items.name},
            ).scalars()
            assert {"muxi_user", "muxi_tenant_admin", "muxi_tenant_list"} <= set(policies)
    alice, bob = Scope("tenant_a", "alice"), Scope("tenant_a", "bob")
    first.put_items(alice, [StoreItem(("a",), "k", {"v": 1}, NOW, NOW)], [])
    assert [i.value for i in first.get_items(alice, [(("a",), "k")], now=NOW)] == [{"v": 1}]
    assert first.get_items(bob, [(("a",), "k")], now=NOW) == []
