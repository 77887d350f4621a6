"""The audit trail's events (issue 17), on every backend and both halves: each refusal,
each id answered as missing, each dropped record and each admin act is written, once, with
who and what, and never any content; reads and writes only when configured; forgetting a
user keeps its events; the chains verify, and an edited or deleted event breaks them."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from muxi_isolation import (
    Backend,
    ConfigError,
    Isolation,
    Memory,
    MemoryBackend,
    Message,
    MissingScope,
    ReservedKey,
    Scope,
    ScopeViolation,
    SessionManager,
    SessionNotFound,
    SessionRecord,
    load_config,
    migrate,
)
from muxi_isolation.audit import (
    DENIED,
    DROPPED,
    MISSING,
    OK,
    Auditor,
    AuditQuery,
    acting,
    prune,
    read_events,
    verify,
)
from muxi_isolation.stores.operations import Operation
from muxi_isolation.stores.sql import SQLBackend

HALVES = ["sync", "async"]
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
CAROL = Scope("tenant_b", "carol")
SECRET = "the-secret-content-7f3a"  # content: must never reach an event


async def call(backend: Backend, half: str, name: str, *args: Any, **kwargs: Any) -> Any:
    if half == "sync":
        return getattr(backend, name)(*args, **kwargs)
    return await getattr(backend, "a" + name)(*args, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def session(user: Scope, sid: str, expires: datetime = NOW + timedelta(hours=1)) -> SessionRecord:
    return SessionRecord(sid, user, NOW, NOW, expires)


def audited(backend: Backend, **options: Any) -> Backend:
    backend.audit = Auditor.database(backend, **options)
    return backend


def events(backend: Backend, **query: Any) -> list[tuple[Any, ...]]:
    """(operation, outcome, tenant, user, session, targets) of each stored event."""
    return [
        (e.operation, e.outcome, e.tenant_id, e.user_id, e.session_id, e.targets)
        for e in read_events(backend, AuditQuery(**query))
    ]


def refuse(backend: Backend, half: str, name: str, error: type, *args: Any, **kw: Any) -> None:
    with pytest.raises(error):
        run(call(backend, half, name, *args, **kw))


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("half", HALVES)
def test_each_refusal_is_an_event_denied(backend: Backend, half: str) -> None:
    audited(backend)
    refuse(backend, half, "get_session", MissingScope, "tenant_a:alice", "sess_1")
    refuse(backend, half, "list_memories", ReservedKey, ALICE, filter={"muxi_user_id": "bob"})
    mine = Memory("m1", SECRET, {"muxi_tenant_id": "tenant_b"})
    refuse(backend, half, "upsert_memories", ReservedKey, ALICE, [mine])
    stamped = Message("user", SECRET, scope=BOB.with_session("s"))  # Bob's, written as Alice's
    refuse(backend, half, "append_messages", ScopeViolation, ALICE.with_session("s"), [stamped])
    refuse(backend, half, "get_messages", MissingScope, ALICE)  # no session
    assert events(backend) == [
        ("get_session", DENIED, None, None, None, ("sess_1",)),
        ("list_memories", DENIED, "tenant_a", "alice", None, ()),
        ("upsert_memories", DENIED, "tenant_a", "alice", None, ("m1",)),
        ("append_messages", DENIED, "tenant_a", "alice", "s", ()),
        ("get_messages", DENIED, "tenant_a", "alice", None, ()),
    ]
    assert verify(backend) == []


@pytest.mark.parametrize("half", HALVES)
def test_a_foreign_id_answered_as_missing_is_an_event(backend: Backend, half: str) -> None:
    backend.insert_session(ALICE, session(ALICE, "sess_alice"))
    backend.upsert_memories(ALICE, [Memory("m_alice", SECRET)])
    backend.upsert_memories(BOB, [Memory("m_bob", "bob's")])
    audited(backend)
    assert run(call(backend, half, "get_session", BOB, "sess_alice")) is None
    assert run(call(backend, half, "delete_session", BOB, "sess_alice")) is False
    found = run(call(backend, half, "get_memories", BOB, ["m_bob", "m_alice"]))
    assert [m.id for m in found] == ["m_bob"]
    when = {"now": NOW, "expires_at": NOW + timedelta(hours=2)}
    with pytest.raises(SessionNotFound):
        run(call(backend, half, "append_to_session", BOB.with_session("sess_alice"), [], **when))
    assert events(backend) == [
        ("get_session", MISSING, "tenant_a", "bob", None, ("sess_alice",)),
        ("delete_session", MISSING, "tenant_a", "bob", None, ("sess_alice",)),
        ("get_memories", MISSING, "tenant_a", "bob", None, ("m_alice",)),
        ("append_to_session", MISSING, "tenant_a", "bob", "sess_alice", ()),
    ]
    assert backend.get_session(ALICE, "sess_alice") is not None  # Alice's own: no event
    assert len(events(backend)) == 4


@pytest.mark.parametrize("half", HALVES)
def test_creating_a_session_on_first_use_is_no_miss(backend: Backend, half: str) -> None:
    """``ensure`` (LangGraph threads, LlamaIndex keys) looks before it creates: its own
    existence check answers no one, so leaves no event; a caller's miss still does."""
    audited(backend)
    sessions = SessionManager(backend)
    if half == "sync":
        sessions.ensure(ALICE, "sess_new")
        with pytest.raises(SessionNotFound):
            sessions.get(BOB, "sess_new")
    else:
        run(sessions.aensure(ALICE, "sess_new"))
        with pytest.raises(SessionNotFound):
            run(sessions.aget(BOB, "sess_new"))
    assert events(backend) == [("get_session", MISSING, "tenant_a", "bob", None, ("sess_new",))]


@pytest.mark.parametrize("half", HALVES)
def test_a_record_dropped_by_verification_is_an_event(backend: Backend, half: str) -> None:
    """A backend whose query forgets the user (asks storage for Alice's rows whoever calls):
    the verification drops them, and each drop is an event of the caller's."""
    backend.upsert_memories(ALICE, [Memory("m1", SECRET)])
    audited(backend)
    kind = type(backend)

    def as_alice(op: Operation[Any]) -> Operation[Any]:
        return replace(op, scope=ALICE) if op.name == "list_memories" else op

    class Leaky(kind):  # type: ignore[misc, valid-type]
        def _perform(self, op: Operation[Any]) -> Any:
            return kind._perform(self, as_alice(op))

        async def _aperform(self, op: Operation[Any]) -> Any:
            return await kind._aperform(self, as_alice(op))

    backend.__class__ = Leaky
    assert run(call(backend, half, "list_memories", BOB)) == []
    assert events(backend) == [("verify", DROPPED, "tenant_a", "bob", None, ("m1",))]


# -- admin acts -------------------------------------------------------------------------------


@pytest.mark.parametrize("half", HALVES)
def test_every_admin_act_is_an_event(backend: Backend, half: str) -> None:
    backend.insert_session(ALICE, session(ALICE, "s1", expires=NOW))
    backend.upsert_memories(CAROL, [Memory("m", SECRET)])
    audited(backend)
    if half == "sync":
        migrate.export_document(backend, ALICE)
    else:
        run(migrate.aexport_document(backend, ALICE))
    old = [Message("user", SECRET, seq=1)]
    run(call(backend, half, "restore_messages", BOB.with_session("s2"), old))
    run(call(backend, half, "purge_expired", NOW + timedelta(days=1), tenant_id="tenant_a"))
    run(call(backend, half, "forget_user", ALICE))
    run(call(backend, half, "forget_tenant", "tenant_b"))
    assert events(backend) == [
        ("export", OK, "tenant_a", "alice", None, ()),
        ("restore_messages", OK, "tenant_a", "bob", "s2", ()),
        ("purge_expired", OK, "tenant_a", None, None, ()),
        ("forget_user", OK, "tenant_a", "alice", None, ()),
        ("forget_tenant", OK, "tenant_b", None, None, ()),
    ]


def test_an_import_is_an_event_and_so_is_each_users_history(
    backend: Backend, tmp_path: Path
) -> None:
    from muxi_isolation.migrate.sources import MuxiExport

    source = MemoryBackend()
    source.insert_session(ALICE, session(ALICE, "s1"))
    source.append_messages(ALICE.with_session("s1"), [Message("user", SECRET)])
    source.upsert_memories(ALICE, [Memory("m1", SECRET)])
    path = tmp_path / "alice.jsonl"
    with path.open("w", encoding="utf-8") as out:
        migrate.export_user(source, ALICE, out)
    audited(backend)
    migrate.run_import(MuxiExport(path), backend, lambda key: key, dry_run=True)
    assert events(backend) == []  # a dry run writes nothing, so is no act
    migrate.run_import(MuxiExport(path), backend, lambda key: key)
    assert events(backend) == [
        ("restore_messages", OK, "tenant_a", "alice", "s1", ()),
        ("import", OK, None, None, None, (f"muxi-export {path}",)),
    ]
    assert SECRET not in json.dumps([e.to_dict() for e in read_events(backend)])


def test_scope_key_rotation_is_an_event(make_backend: Any) -> None:
    backend = audited(make_backend("postgres"))
    backend.upsert_memories(ALICE, [Memory("m", "x")])
    backend.rotate_scope_key()
    run(backend.aget_memories(ALICE, ["m"]))  # still works after the rotation
    backend.rotate_scope_key(finish=True)
    assert events(backend) == [
        ("rotate_scope_key", OK, None, None, None, ()),
        ("rotate_scope_key", OK, None, None, None, ()),
    ]


# -- reads and writes, only when configured ----------------------------------------------------


def everyday(backend: Backend, half: str) -> None:
    """A user's ordinary reads and writes, none refused."""
    run(call(backend, half, "insert_session", ALICE, session(ALICE, "s1")))
    run(call(backend, half, "append_messages", ALICE.with_session("s1"), [Message("user", SECRET)]))
    run(call(backend, half, "get_messages", ALICE.with_session("s1")))
    run(call(backend, half, "upsert_memories", ALICE, [Memory("m1", SECRET, {"k": SECRET})]))
    run(call(backend, half, "search_memories", ALICE, None, mode="text", text=SECRET))
    run(call(backend, half, "list_memories", ALICE))


@pytest.mark.parametrize("half", HALVES)
def test_reads_and_writes_are_events_only_when_configured(backend: Backend, half: str) -> None:
    audited(backend)
    everyday(backend, half)
    assert events(backend) == []
    audited(backend, reads=True)
    run(call(backend, half, "get_messages", ALICE.with_session("s1")))
    run(call(backend, half, "list_memories", ALICE))
    run(call(backend, half, "upsert_memories", ALICE, [Memory("m2", "y")]))
    assert events(backend) == [
        ("get_messages", OK, "tenant_a", "alice", "s1", ()),
        ("list_memories", OK, "tenant_a", "alice", None, ()),
    ]
    audited(backend, writes=True)
    run(call(backend, half, "list_memories", ALICE))
    run(call(backend, half, "upsert_memories", ALICE, [Memory("m3", "z")]))
    assert events(backend)[2:] == [("upsert_memories", OK, "tenant_a", "alice", None, ("m3",))]


@pytest.mark.parametrize("half", HALVES)
def test_no_event_holds_content(backend: Backend, half: str) -> None:
    audited(backend, reads=True, writes=True)
    everyday(backend, half)
    hostile = [Memory("x", SECRET, {"muxi_user_id": SECRET})]
    refuse(backend, half, "upsert_memories", ReservedKey, ALICE, hostile)
    run(call(backend, half, "forget_user", ALICE))
    stored = read_events(backend)
    assert len(stored) == 8
    assert SECRET not in json.dumps([e.to_dict() for e in stored])
    if isinstance(backend, SQLBackend):  # and nothing in the table's raw rows either
        table = f"{backend.tables.metadata.schema}.muxi_audit_events"
        with backend._as_owner() as conn:
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()
        assert len(rows) == 8 and SECRET not in repr(rows)


# -- the trail outlives the data, and holds together --------------------------------------------


def test_forget_user_keeps_the_events_about_the_user(backend: Backend) -> None:
    audited(backend)
    backend.get_session(ALICE, "sess_unknown")
    counts = backend.forget_user(ALICE)
    assert counts.get("memories", 0) == 0
    assert [e[:2] for e in events(backend, user_id="alice")] == [
        ("get_session", MISSING),
        ("forget_user", OK),
    ]


def test_each_tenant_has_its_own_chain(backend: Backend) -> None:
    audited(backend)
    for scope in (ALICE, CAROL, BOB, CAROL):
        backend.get_session(scope, "nope")
    chains = [(e.tenant_id, e.seq) for e in read_events(backend)]
    assert chains == [("tenant_a", 1), ("tenant_b", 1), ("tenant_a", 2), ("tenant_b", 2)]
    first = read_events(backend)
    assert first[2].prev_hash == first[0].hash and first[3].prev_hash == first[1].hash
    assert verify(backend) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_appends_keep_one_chain(make_backend: Any, kind: str) -> None:
    """Threads and tasks appending to one tenant's chain at once: no seq is taken twice."""
    backend = audited(make_backend(kind))
    threads = [
        threading.Thread(target=backend.get_session, args=(ALICE, f"t{i}")) for i in range(8)
    ]
    for t in threads:
        t.start()

    async def tasks() -> None:
        await asyncio.gather(*(backend.aget_session(BOB, f"a{i}") for i in range(8)))

    run(tasks())
    for t in threads:
        t.join()
    stored = read_events(backend)
    assert sorted(e.seq for e in stored) == list(range(1, 17))
    assert verify(backend) == []


def test_an_edited_or_deleted_memory_event_breaks_the_chain(make_backend: Any) -> None:
    backend = audited(make_backend("memory"))
    for sid in ("s1", "s2", "s3", "s4"):
        backend.get_session(ALICE, sid)
    log = backend._audit_events.events  # type: ignore[attr-defined]
    log[1] = type(log[1])(**{**log[1].__dict__, "targets": ("edited",)})
    del log[2]
    assert [(b.seq, b.reason) for b in verify(backend)] == [
        (2, "the event was changed after it was written"),
        (4, "events 3 to 3 are missing"),
    ]


def test_the_interface_and_actor_are_the_callers(backend: Backend) -> None:
    audited(backend)
    backend.get_session(ALICE, "s")
    with acting("sha256:0123456789ab", "http"):
        backend.get_session(ALICE, "s")
    found = [(e.actor, e.interface) for e in read_events(backend)]
    assert found == [("app", "core"), ("sha256:0123456789ab", "http")]


# -- retention and configuration ----------------------------------------------------------------


def test_prune_deletes_the_oldest_events_and_the_rest_still_verifies(backend: Backend) -> None:
    auditor = audited(backend).audit
    auditor.retention = timedelta(days=365)
    for days, scope in ((800, ALICE), (400, CAROL), (10, ALICE), (5, CAROL)):
        auditor.clock = lambda days=days: datetime.now(timezone.utc) - timedelta(days=days)
        backend.get_session(scope, "old")
    auditor.clock = lambda: datetime.now(timezone.utc)
    assert prune(backend) == 2
    left = [(e.operation, e.tenant_id, e.seq) for e in read_events(backend)]
    assert left[:2] == [("get_session", "tenant_a", 2), ("get_session", "tenant_b", 2)]
    assert left[2][0] == "audit_prune"
    assert verify(backend) == []


def test_the_config_chooses_the_sink(caplog: pytest.LogCaptureFixture) -> None:
    memory = {"memory": {"persistent": {"provider": "memory"}}}
    iso = Isolation.from_config({**memory, "audit": {"sink": "log", "reads": True}})
    with caplog.at_level(logging.INFO, logger="muxi_isolation.audit"):
        iso.memories("tenant_a:alice").list()
    assert read_events(iso.backend) == []  # the log, not the table
    line = json.loads(caplog.records[-1].getMessage())
    assert line["operation"] == "list_memories" and line["user_id"] == "alice"
    off = Isolation.from_config({**memory, "audit": {"enabled": False}})
    off.forget_user("tenant_a:alice")
    assert off.backend.audit.enabled is False and read_events(off.backend) == []
    on = Isolation.from_config(memory)  # the default: on, into the backend's table
    on.forget_user("tenant_a:alice")
    assert [e.operation for e in read_events(on.backend)] == ["forget_user"]
    with pytest.raises(ConfigError, match=r"audit\.sink"):
        load_config({"audit": {"sink": "syslog"}})


def test_each_event_is_a_span_event_with_tenant_and_user(backend: Backend) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    audited(backend)
    with provider.get_tracer("test").start_as_current_span("request"):
        backend.get_session(ALICE, "sess_x")
    (span,) = exported.get_finished_spans()
    (event,) = span.events
    assert event.name == "muxi.audit"
    attributes = dict(event.attributes or {})
    assert attributes["muxi.tenant_id"] == "tenant_a" and attributes["muxi.user_id"] == "alice"
    assert attributes["muxi.outcome"] == MISSING and attributes["muxi.targets"] == ("sess_x",)
