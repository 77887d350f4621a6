"""Export a user to JSON Lines and import it into another database: nothing lost.

Every source backend, into SQLite and PostgreSQL, compared field by field: session records,
each message's seq, role, content, metadata, tool calls, status and time, sessions that
hold messages without a record, and memories with their embeddings (to float32 precision).
"""

from __future__ import annotations

import io
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from muxi_isolation import (
    Backend,
    Memory,
    Message,
    Scope,
    SessionRecord,
    UnreadableSource,
)
from muxi_isolation.migrate import (
    aexport_user,
    export_document,
    export_user,
    run_import,
)
from muxi_isolation.migrate._codec import iso, parse_time
from muxi_isolation.migrate.sources import MuxiExport

T0 = datetime(2026, 1, 8, 10, 0, 0, 123456, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
SECRET = "bob's-unique-secret-7f3a"


def fill(backend: Backend) -> None:
    """A user with everything an export must keep, and a neighbour it must not."""
    for sid, at in (("s1", T0), ("s2", T0 + timedelta(minutes=5))):
        backend.insert_session(
            ALICE, SessionRecord(sid, ALICE, at, at + timedelta(minutes=1), at + timedelta(hours=1))
        )
    s1 = ALICE.with_session("s1")
    backend.append_messages(
        s1,
        [
            Message("system", "Be brief.", created_at=T0),
            Message(
                "user",
                "héllo 👋",
                {"lang": "fr", "nested": {"a": [1, None, True]}},
                created_at=T0 + timedelta(seconds=1),
            ),
            Message(
                "assistant",
                [{"type": "text", "text": "calling"}],
                {"langchain": {"type": "ai"}},
                [{"id": "c1", "name": "search", "args": {"q": "x", "n": 2.5}}],
                created_at=T0 + timedelta(seconds=2),
            ),
            Message("tool", "result", {"tool_call_id": "c1"}, created_at=T0 + timedelta(seconds=3)),
            Message("assistant", "done", created_at=T0 + timedelta(seconds=4)),
        ],
    )
    backend.take_oldest(s1, 2, archive=True)  # statuses: archived, archived, active...
    backend.delete_message(s1, 4)  # a gap in the seqs
    backend.append_messages(ALICE.with_session("s2"), [Message("user", "second session")])
    backend.append_messages(ALICE.with_session("no_record"), [Message("user", "orphan")])
    backend.upsert_memories(
        s1,
        [
            Memory(
                "m1",
                "likes jazz",
                {"topic": "music", "score": 0.1},
                [0.1, -0.2, 1 / 3, 1e-8, 7.25, -1.5, 0.0, 2.0],
                T0,
            ),
        ],
    )
    backend.upsert_memories(ALICE, [Memory("m2", "no vector", {}, None, T0 + timedelta(days=1))])
    bob = BOB.with_session("s1")
    backend.insert_session(BOB, SessionRecord("s1", BOB, T0, T0, T0 + timedelta(hours=1)))
    backend.append_messages(bob, [Message("user", SECRET)])
    backend.upsert_memories(bob, [Memory("m1", SECRET, {}, [1.0] * 8)])


def f32(values: list[float] | None) -> list[float] | None:
    return None if values is None else [float(f"{v:.6g}") for v in values]


def snapshot(backend: Backend, user: Scope) -> dict[str, Any]:
    """The user's state through the public API, field by field."""
    sessions = backend.list_sessions(user)
    ids = sorted({s.id for s in sessions} | set(backend.list_message_sessions(user)))
    return {
        "sessions": [(s.id, s.created_at, s.last_active_at, s.expires_at) for s in sessions],
        "messages": {
            sid: [
                (m.seq, m.role, m.content, m.metadata, m.tool_calls, m.status, m.created_at)
                for m in backend.get_messages(user.with_session(sid))
            ]
            for sid in ids
        },
        "memories": [
            (
                m.id,
                m.content,
                m.metadata,
                m.created_at,
                m.scope and m.scope.session_id,
                f32(m.embedding),
            )
            for m in backend.list_memories(user)
        ],
    }


def export_file(backend: Backend, tmp_path: Path, user: Scope = ALICE) -> Path:
    path = tmp_path / "alice.jsonl"
    with path.open("w", encoding="utf-8") as out:
        export_user(backend, user, out)
    return path


@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
def test_round_trip_loses_nothing(
    backend: Backend, make_backend: Any, tmp_path: Path, target_kind: str
) -> None:
    fill(backend)
    path = export_file(backend, tmp_path)
    target = make_backend(target_kind)
    report = run_import(MuxiExport(path), target, lambda key: key)
    assert report.ok and report.errors == [] and report.unchanged == 0
    assert report.to_dict()["scopes"] == {
        "tenant_a:alice": {"memories": 2, "messages": 6, "sessions": 2}
    }
    before, after = snapshot(backend, ALICE), snapshot(target, ALICE)
    assert after == before
    s1 = after["messages"]["s1"]
    assert [(r[0], r[5]) for r in s1] == [
        (1, "archived"),
        (2, "archived"),
        (3, "active"),
        (5, "active"),
    ]
    assert "no_record" in after["messages"] and [s[0] for s in after["sessions"]] == ["s1", "s2"]
    for got, want in zip(target.list_memories(ALICE), backend.list_memories(ALICE), strict=True):
        if want.embedding is not None:
            assert got.embedding is not None
            assert all(
                math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
                for a, b in zip(got.embedding, want.embedding, strict=True)
            )
    # the seq counter came along: the next message never reuses a seq
    nxt = target.append_messages(ALICE.with_session("s1"), [Message("user", "next")])
    assert nxt[0].seq == 6
    # only alice travelled
    assert SECRET not in path.read_text(encoding="utf-8")
    assert target.list_sessions(BOB) == [] and target.count_memories(BOB) == 0


def test_second_import_writes_nothing(backend: Backend, make_backend: Any, tmp_path: Path) -> None:
    fill(backend)
    path = export_file(backend, tmp_path)
    target = make_backend("sqlite")
    run_import(MuxiExport(path), target, lambda key: key)
    first = snapshot(target, ALICE)
    again = run_import(MuxiExport(path), target, lambda key: key)
    assert again.ok and again.totals == {} and again.unchanged == 5  # 3 sessions, 2 memories
    assert snapshot(target, ALICE) == first


def test_import_as_another_user(backend: Backend, tmp_path: Path, make_backend: Any) -> None:
    fill(backend)
    path = export_file(backend, tmp_path)
    target = make_backend("sqlite")
    carol = Scope("tenant_b", "carol")
    run_import(MuxiExport(path), target, "tenant_b:carol")
    assert snapshot(target, carol) == snapshot(backend, ALICE)
    assert snapshot(target, ALICE) == {"sessions": [], "messages": {}, "memories": []}


def test_dry_run_writes_nothing(backend: Backend, tmp_path: Path, make_backend: Any) -> None:
    fill(backend)
    target = make_backend("sqlite")
    report = run_import(
        MuxiExport(export_file(backend, tmp_path)), target, lambda k: k, dry_run=True
    )
    assert report.dry_run and report.totals == {"memories": 2, "messages": 6, "sessions": 2}
    assert target.list_tenants() == []


async def test_async_export_matches_sync(backend: Backend) -> None:
    fill(backend)
    sync, asyn = io.StringIO(), io.StringIO()
    counts = export_user(backend, ALICE, sync, now=T0)
    assert await aexport_user(backend, ALICE, asyn, now=T0) == counts
    assert counts == {"session": 2, "message": 6, "memory": 2}
    assert sync.getvalue() == asyn.getvalue()
    lines = [json.loads(line) for line in sync.getvalue().splitlines()]
    assert lines[0] == {
        "type": "muxi-isolation-export",
        "v": 1,
        "tenant_id": "tenant_a",
        "user_id": "alice",
        "exported_at": "2026-01-08T10:00:00.123456+00:00",
    }
    assert all(line["v"] == 1 and "type" in line for line in lines)
    assert lines[-1] == {"type": "end", "v": 1, "counts": counts}


def test_the_document_form_nests_messages(backend: Backend) -> None:
    fill(backend)
    doc = export_document(backend, ALICE, now=T0)
    assert (doc["user_id"], doc["tenant_id"], doc["version"]) == ("tenant_a:alice", "tenant_a", 1)
    assert [s["id"] for s in doc["sessions"]] == ["s1", "s2", "no_record"]
    assert doc["sessions"][2]["record"] is False
    assert [m["seq"] for m in doc["sessions"][0]["messages"]] == [1, 2, 3, 5]
    assert [m["id"] for m in doc["memories"]] == ["m1", "m2"]
    assert SECRET not in json.dumps(doc)


def damage(path: Path, how: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    if how == "truncated":
        lines = lines[:-1]
    elif how == "bad json":
        lines[3] = lines[3][:-5]
    elif how == "unknown type":
        lines.insert(2, json.dumps({"type": "checkpoint", "v": 1}))
    elif how == "newer version":
        lines[2] = json.dumps({**json.loads(lines[2]), "v": 2})
    elif how == "bad field":
        lines[3] = json.dumps({**json.loads(lines[3]), "seq": "one"})
    elif how == "bad id":
        lines[1] = json.dumps({**json.loads(lines[1]), "id": " padded"})
    elif how == "wrong counts":
        lines[-1] = json.dumps({"type": "end", "v": 1, "counts": {"session": 9}})
    elif how == "not an export":
        lines[0] = json.dumps({"type": "something else"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "bad json",
        "unknown type",
        "newer version",
        "bad field",
        "bad id",
        "wrong counts",
        "not an export",
    ],
)
def test_a_damaged_export_is_refused_before_any_write(
    backend: Backend, tmp_path: Path, make_backend: Any, how: str
) -> None:
    fill(backend)
    path = export_file(backend, tmp_path)
    damage(path, how)
    target = make_backend("sqlite")
    with pytest.raises(UnreadableSource):
        run_import(MuxiExport(path), target, lambda key: key)
    assert target.list_tenants() == []


def test_a_missing_file_is_unreadable(make_backend: Any, tmp_path: Path) -> None:
    with pytest.raises(UnreadableSource, match="no such file"):
        run_import(MuxiExport(tmp_path / "nope.jsonl"), make_backend("memory"), lambda k: k)


Lines = list[str]


def edit(line: str, **fields: Any) -> str:
    """The JSON line with ``fields`` replaced; a field set to ``...`` is removed."""
    record = {**json.loads(line), **fields}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def moved(lines: Lines, frm: int, to: int) -> Lines:
    lines = list(lines)
    lines.insert(to, lines.pop(frm))
    return lines


# The export of ``fill``: 0 header, 1-2 sessions s1 s2, 3-6 messages of s1 (seqs 1 2 3 5),
# 7 of s2, 8 of no_record, 9-10 memories m1 m2, 11 the end line.
BROKEN: dict[str, tuple[Any, str]] = {
    "empty file": (lambda x: [], "is empty"),
    "only blank lines": (lambda x: ["", "  "], "is empty"),
    "a list, not a record": (lambda x: [x[0], "[1, 2]", *x[1:]], "not a typed record"),
    "a numeric type": (lambda x: [x[0], '{"type": 5}', *x[1:]], "not a typed record"),
    "header version 0": (lambda x: [edit(x[0], v=0), *x[1:]], "format version 0"),
    "header version text": (lambda x: [edit(x[0], v="1"), *x[1:]], "format version '1'"),
    "a record after the end": (lambda x: [*x, x[10]], "after the end line"),
    "a session after messages": (lambda x: moved(x, 2, 4), "before messages"),
    "a session's messages apart": (
        lambda x: moved(x, 7, 4),
        "alice.jsonl:6: messages of session 's1' are not together",
    ),
    "a repeated seq": (lambda x: [*x[:4], edit(x[4], seq=1), *x[5:]], "seq 1 is repeated"),
    "seq 0": (lambda x: [*x[:3], edit(x[3], seq=0), *x[4:]], "seq 0 is repeated or not"),
    "seq true": (lambda x: [*x[:3], edit(x[3], seq=True), *x[4:]], "'seq' has the wrong type"),
    "no content": (lambda x: [*x[:3], edit(x[3], content=...), *x[4:]], "missing field 'content'"),
    "no role": (lambda x: [*x[:3], edit(x[3], role=...), *x[4:]], "missing field 'role'"),
    "a decomposed session id": (
        lambda x: [*x[:8], edit(x[8], session_id="cafe\u0301"), *x[9:]],
        "'session_id' is not a canonical id",
    ),
    "a time as a number": (
        lambda x: [x[0], edit(x[1], created_at=1767866400), *x[2:]],
        "created_at must be an ISO 8601 time, got int",
    ),
    "no expiry": (lambda x: [x[0], edit(x[1], expires_at=None), *x[2:]], "'expires_at'"),
    "an embedding of text": (
        lambda x: [*x[:9], edit(x[9], embedding=["0.1"]), *x[10:]],
        "'embedding' must be a list of numbers",
    ),
    "an embedding of booleans": (
        lambda x: [*x[:9], edit(x[9], embedding=[True, False]), *x[10:]],
        "'embedding' must be a list of numbers",
    ),
    "a type no section restores": (
        lambda x: [*x[:11], json.dumps({"type": "crm_note", "v": 1}), x[11]],
        "'crm_note' needs an export section",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_export_says_where_and_writes_nothing(
    make_backend: Any, tmp_path: Path, case: str
) -> None:
    source = make_backend("memory")
    fill(source)
    path = export_file(source, tmp_path)
    change, match = BROKEN[case]
    lines = change(path.read_text(encoding="utf-8").splitlines())
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    target = make_backend("sqlite")
    with pytest.raises(UnreadableSource, match=match):
        run_import(MuxiExport(path), target, lambda key: key)
    assert target.list_tenants() == []


def test_a_memory_listed_twice_is_one_error(make_backend: Any, tmp_path: Path) -> None:
    source = make_backend("memory")
    fill(source)
    path = export_file(source, tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    twin = edit(lines[10], content="a second m2")
    end = edit(lines[11], counts={"session": 2, "message": 6, "memory": 3})
    path.write_text("\n".join([*lines[:11], twin, end]) + "\n", encoding="utf-8")
    target = make_backend("sqlite")
    report = run_import(MuxiExport(path), target, lambda key: key)
    assert [(p.key, p.reason) for p in report.errors] == [
        ("tenant_a:alice / m2", "ScopeViolation: memory 'm2' of tenant_a:alice appears twice")
    ]
    assert [m.content for m in target.get_memories(ALICE, ["m2"])] == ["no vector"]


def test_a_file_that_is_not_text_is_unreadable(make_backend: Any, tmp_path: Path) -> None:
    binary = tmp_path / "export.jsonl"
    binary.write_bytes(b'{"type": "muxi-isolation-export"}\n\xff\xfe\x00garbage\n')
    target = make_backend("memory")
    with pytest.raises(UnreadableSource, match="cannot read"):
        run_import(MuxiExport(binary), target, lambda key: key)
    with pytest.raises(UnreadableSource, match="cannot read"):
        run_import(MuxiExport(tmp_path), target, lambda key: key)  # a directory
    assert target.list_tenants() == []


def test_blank_lines_and_naive_times_are_read(make_backend: Any, tmp_path: Path) -> None:
    source = make_backend("memory")
    fill(source)
    path = export_file(source, tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = edit(lines[1], created_at="2026-01-08T10:00:00.123456")  # no offset: UTC
    path.write_text("\n\n".join(lines) + "\n   \n", encoding="utf-8")
    target = make_backend("sqlite")
    report = run_import(MuxiExport(path), target, lambda key: key)
    assert report.ok and report.totals == {"memories": 2, "messages": 6, "sessions": 2}
    assert snapshot(target, ALICE) == snapshot(source, ALICE)


def test_naive_times_are_written_as_utc() -> None:
    naive = datetime(2026, 1, 8, 10, 0, 0, 5)
    assert iso(naive) == "2026-01-08T10:00:00.000005+00:00"
    assert iso(naive.replace(tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-01-08T08:00:00.000005+00:00"
    )
    assert parse_time(iso(naive), "created_at") == naive.replace(tzinfo=timezone.utc)


def test_conflicts_are_left_alone_unless_replace(
    backend: Backend, tmp_path: Path, make_backend: Any
) -> None:
    fill(backend)
    path = export_file(backend, tmp_path)
    target = make_backend("sqlite")
    target.append_messages(ALICE.with_session("s2"), [Message("user", "written since")])
    target.upsert_memories(ALICE, [Memory("m2", "changed since", {})])
    report = run_import(MuxiExport(path), target, lambda key: key)
    assert not report.ok
    assert sorted(p.key for p in report.conflicts) == ["tenant_a:alice / m2", "tenant_a:alice / s2"]
    assert [m.content for m in target.get_messages(ALICE.with_session("s2"))] == ["written since"]
    assert target.get_memories(ALICE, ["m2"])[0].content == "changed since"
    forced = run_import(MuxiExport(path), target, lambda key: key, replace=True)
    assert forced.ok
    assert snapshot(target, ALICE) == snapshot(backend, ALICE)
