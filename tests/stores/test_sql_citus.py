"""Ready for Citus: every statement on a scoped table names one tenant, and the DDL exists.

A Citus router query needs an equality on the distribution column: we hook SQLAlchemy's
cursor events and check every statement the backend sends while it serves a workload that
touches every operation, sync and async, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from _watch import postgres_round_trips, sent_sql
from sqlalchemy import event

from muxi_isolation import ConfigError, Memory, Message, Scope, SessionExpired, SessionRecord
from muxi_isolation.stores.sql import SQLBackend, citus_ddl

T0 = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_b", "bob")
TENANTS = {"tenant_a", "tenant_b"}


def workload(backend: SQLBackend, scope: Scope) -> None:
    s = scope.with_session("s1")
    backend.insert_session(scope, SessionRecord("s1", scope, T0, T0, T0 + timedelta(hours=1)))
    backend.get_session(scope, "s1")
    backend.list_sessions(scope)
    backend.touch_session(scope, "s1", T0, T0 + timedelta(hours=2))
    stored = backend.append_messages(s, [Message("user", f"m{i}") for i in range(4)])
    backend.get_messages(s, last=2)
    backend.read_turn(scope, "s1", now=T0, last=2)
    backend.get_messages(s, limit=2, offset=1, status="active")
    backend.count_messages(s)
    backend.take_oldest(s, 1, archive=True)
    backend.take_oldest(s, 1, archive=False)
    assert stored[3].seq is not None
    backend.delete_message(s, stored[3].seq)
    backend.delete_messages(s, status="archived")
    backend.replace_messages(s, [Message("user", "again")])
    memories = [
        Memory(f"m{i}", "x", {"n": i, "tags": ["a", "b"][: i % 3]}, [1.0, float(i)])
        for i in range(6)
    ]
    backend.upsert_memories(s, memories)
    backend.get_memories(scope, ["m1", "m2"])
    backend.list_memories(scope, filter={"$or": [{"tags": {"$all": ["a"]}}, {"n": {"$gt": 3}}]})
    backend.count_memories(scope, filter={"$not": {"tags": {"$contains": "b"}}})
    backend.search_memories(scope, [1.0, 0.5], k=3)  # above ann_threshold: the HNSW path
    backend.search_memories(scope, [1.0, 0.5], k=3, filter={"n": 0})  # fallback to exact
    backend.delete_memories(scope, ids=["m0"], filter={"n": 0})
    backend.delete_session(scope, "s1")
    backend.forget_user(scope)


async def aworkload(backend: SQLBackend, scope: Scope) -> None:
    s = scope.with_session("s2")
    await backend.ainsert_session(scope, SessionRecord("s2", scope, T0, T0, T0))
    await backend.aget_session(scope, "s2")
    await backend.alist_sessions(scope)
    await backend.atouch_session(scope, "s2", T0, T0)
    stored = await backend.aappend_messages(s, [Message("user", "a"), Message("user", "b")])
    await backend.aget_messages(s)
    await backend.aread_turn(scope, "s2", now=T0 - timedelta(hours=1), last=1)
    await backend.acount_messages(s)
    await backend.atake_oldest(s, 1, archive=True)
    assert stored[1].seq is not None
    await backend.adelete_message(s, stored[1].seq)
    await backend.adelete_messages(s)
    await backend.areplace_messages(s, [])
    await backend.aupsert_memories(s, [Memory("a", "a", {"k": "v"}, [0.0, 1.0])])
    await backend.aget_memories(scope, ["a"])
    await backend.alist_memories(scope, filter={"k": {"$text": "v"}})
    await backend.acount_memories(scope)
    await backend.asearch_memories(scope, [0.0, 1.0], k=2)
    await backend.adelete_memories(scope)
    await backend.adelete_session(scope, "s2")
    await backend.aforget_user(scope)


_TENANT_EQ = re.compile(r"\btenant_id = (%\((\w+)\)s|\?)")


class StatementLog:
    """Every statement sent on a backend's engines, with its parameters."""

    def __init__(self, backend: SQLBackend) -> None:
        self.seen: list[tuple[str, object]] = []
        self.scoped = [t.name for t in backend.tables.scoped]
        for sync, async_ in backend._all_engines():  # SQLite's writers have engines of their own
            for engine in (sync, async_.sync_engine):
                event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.seen.append((statement, parameters))

    def on_scoped_tables(self) -> list[tuple[str, object]]:
        return [(s, p) for s, p in self.seen if any(name in s for name in self.scoped)]


def assert_single_tenant(statement: str, parameters: object) -> None:
    head = statement.lstrip().split(None, 1)[0].upper()
    if head == "INSERT":
        columns = statement[statement.index("(") : statement.index(")")]
        assert "tenant_id" in columns, statement
        rows = parameters if isinstance(parameters, list) else [parameters]
        for row in rows:
            if isinstance(row, dict):  # multi-row VALUES name them tenant_id__0, __1, ...
                tenants = [v for k, v in row.items() if k.split("__")[0] == "tenant_id"]
                assert tenants and all(t in TENANTS for t in tenants), statement
        return
    matches = _TENANT_EQ.findall(statement)
    assert matches, f"no tenant_id equality in: {statement}"
    for _, name in matches:
        if name and isinstance(parameters, dict):
            assert parameters[name] in TENANTS, statement


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_every_statement_names_one_tenant(make_backend, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension=2, ann_threshold=2, ann_index_delay=0)
    backend.setup()  # DDL is not routed: watch from here
    log = StatementLog(backend)
    workload(backend, ALICE)
    await aworkload(backend, BOB)
    checked = log.on_scoped_tables()
    assert len(checked) > 40
    for statement, parameters in checked:
        if kind == "sqlite" and statement.endswith("VALUES ('optimize')"):
            continue  # the FTS5 merge after a forget: whole-index by design, SQLite only
        assert_single_tenant(statement, parameters)
    if kind == "postgres":
        assert any("hnsw.iterative_scan" in str(p) for _, p in log.seen)


async def test_citus_mode_sets_the_scope_with_set_local(make_backend) -> None:
    backend = make_backend(
        "postgres", embedding_dimension=2, ann_threshold=2, citus=True, ann_index_delay=0
    )
    backend.setup()
    log = StatementLog(backend)
    workload(backend, ALICE)
    await aworkload(backend, BOB)
    statements = [s for s, _ in log.seen]
    assert not any("set_config" in s for s in statements)
    assert any(s.startswith("SET LOCAL muxi.tenant_id = 'tenant_a'") for s in statements)
    assert any(s.startswith("SET LOCAL hnsw.iterative_scan") for s in statements)
    backend.upsert_memories(ALICE, [Memory("x", "it's")])  # RLS saw the SET LOCAL scope
    assert [m.content for m in backend.list_memories(ALICE)] == ["it's"]
    assert backend.list_memories(BOB) == []


async def test_citus_mode_quotes_awkward_ids(make_backend) -> None:
    backend = make_backend("postgres", citus=True)
    odd = Scope("t'; DROP TABLE x; --", "o'brien\\")
    backend.upsert_memories(odd, [Memory("m", "kept")])
    assert [m.content for m in await backend.alist_memories(odd)] == ["kept"]
    assert backend.list_memories(Scope("t", "o'brien\\")) == []


def test_citus_ddl_distributes_every_scoped_table_colocated() -> None:
    ddl = citus_ddl()
    assert ddl[0] == "SELECT create_distributed_table('muxi_sessions', 'tenant_id')"
    for table in ("muxi_messages", "muxi_message_counters", "muxi_memories"):
        assert (
            f"SELECT create_distributed_table('{table}', 'tenant_id', "
            "colocate_with => 'muxi_sessions')"
        ) in ddl
    assert ddl[-1] == "SELECT create_reference_table('muxi_schema_version')"


def test_citus_ddl_with_prefix_and_schema() -> None:
    ddl = citus_ddl(table_prefix="app_", schema="tenants")
    assert ddl[0] == "SELECT create_distributed_table('tenants.app_sessions', 'tenant_id')"
    with pytest.raises(ConfigError):
        citus_ddl(table_prefix="x'); DROP TABLE y; --")
    with pytest.raises(ConfigError):
        citus_ddl(schema="Tenants")


# Citus: the touch, the counter, and the insert's two rows (psycopg's executemany sends each)
@pytest.mark.parametrize(("citus", "expected"), [(False, 1), (True, 4)])
def test_an_append_touches_and_reserves_in_one_statement_unless_citus(
    make_backend, citus: bool, expected: int
) -> None:
    """PostgreSQL: the session touch, the seq counter and the insert are one statement of
    data-modifying CTEs (in one flight: ``_pg_append``); Citus keeps them apart. Either
    way the seqs and the refusals are the same. Counted on the wire (libpq's trace)."""
    backend = make_backend("postgres", citus=citus)
    backend.insert_session(ALICE, SessionRecord("s", ALICE, T0, T0, T0 + timedelta(hours=1)))
    scope, later = ALICE.with_session("s"), T0 + timedelta(minutes=5)
    scoped = [t.name for t in backend.tables.scoped]
    pair = [Message("user", "a"), Message("assistant", "b")]
    with postgres_round_trips(backend) as traces:
        stored = backend.append_to_session(scope, pair, now=later, expires_at=later)
    sent = [s for s in sent_sql(traces) if any(name in s for name in scoped)]
    assert len(sent) == expected, [s[:40] for s in sent]
    assert [m.seq for m in stored] == [1, 2]
    with pytest.raises(SessionExpired):  # expired at `later`: refused, the counter unmoved
        backend.append_to_session(scope, pair, now=later, expires_at=later)
    backend.touch_session(ALICE, "s", later, later + timedelta(hours=1))
    again = backend.append_to_session(scope, pair[:1], now=later, expires_at=later)
    assert [m.seq for m in again] == [3]
