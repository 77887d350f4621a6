"""LangGraph data travels in exports too: checkpoints with their pending writes, and store
items with their embeddings, read back through the LangGraph adapter on the target."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langgraph.checkpoint.base import empty_checkpoint

from muxi_isolation import Backend, Scope, UnreadableSource
from muxi_isolation.adapters.langgraph import MuxiCheckpointer, MuxiStore
from muxi_isolation.migrate import aexport_user, export_document, export_user, run_import
from muxi_isolation.migrate._export import SECTIONS, Section, register_section
from muxi_isolation.migrate._graph import GRAPH_SECTION
from muxi_isolation.migrate.sources import MuxiExport
from muxi_isolation.stores.graph import CheckpointQuery

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_a", "bob")
NOW = datetime(2026, 1, 8, 10, 0, tzinfo=timezone.utc)


class Letters(Embeddings):
    """Two dimensions: how many a's and b's, enough to show the vectors travel."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(t.count("a")) + 0.5, float(t.count("b")) + 0.25] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


INDEX: Any = {"dims": 2, "embed": Letters(), "fields": ["text"]}


def fill(backend: Backend, scope: Scope, word: str) -> dict[str, Any]:
    saver = MuxiCheckpointer(backend, scope=scope)
    first = empty_checkpoint()
    first["channel_values"] = {"messages": [f"{word} one"]}
    config = saver.put(
        {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}},
        first,
        {"source": "input", "step": -1, "word": word},
        {},
    )
    saver.put_writes(config, [("messages", f"{word} pending"), ("other", b"\x00\xff")], "task-1")
    second = empty_checkpoint()
    second["channel_values"] = {"messages": [f"{word} one", f"{word} two"]}
    config = saver.put(config, second, {"source": "loop", "step": 0}, {})
    store = MuxiStore(backend, scope=scope, index=INDEX)
    store.put(("memories", scope.user_id), "fav", {"text": f"{word} likes bananas"})
    store.put(("prefs",), "lang", {"lang": "fr"}, index=False)
    return config


def state(backend: Backend, scope: Scope) -> dict[str, Any]:
    saver = MuxiCheckpointer(backend, scope=scope)
    tuples = list(saver.list({"configurable": {"thread_id": "t1"}}))
    store = MuxiStore(backend, scope=scope, index=INDEX)
    found = store.search(("memories",), query="bananas")
    return {
        "checkpoints": [
            (t.checkpoint, t.metadata, t.parent_config, t.pending_writes) for t in tuples
        ],
        "items": [(i.namespace, i.key, i.value, i.created_at, i.score) for i in found],
        "prefs": store.get(("prefs",), "lang").value,  # type: ignore[union-attr]
    }


@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
def test_graph_data_round_trip(
    backend: Backend, make_backend: Any, tmp_path: Path, target_kind: str
) -> None:
    fill(backend, ALICE, "alice")
    fill(backend, BOB, "bob")
    path = tmp_path / "alice.jsonl"
    with path.open("w", encoding="utf-8") as out:
        counts = export_user(backend, ALICE, out)
    assert counts == {"session": 1, "checkpoint": 2, "store_item": 2}
    assert "bob" not in path.read_text(encoding="utf-8")
    target = make_backend(target_kind)
    report = run_import(MuxiExport(path), target, lambda key: key)
    assert report.ok and report.totals == {
        "checkpoints": 2,
        "checkpoint_writes": 2,
        "sessions": 1,
        "store_items": 2,
    }
    assert state(target, ALICE) == state(backend, ALICE)
    assert state(target, ALICE)["checkpoints"][1][3][1][2] == b"\x00\xff"  # a binary write
    again = run_import(MuxiExport(path), target, lambda key: key)
    assert again.ok and again.totals == {} and again.unchanged == 5


def test_a_damaged_graph_record_is_refused(backend: Backend, tmp_path: Path) -> None:
    fill(backend, ALICE, "alice")
    path = tmp_path / "alice.jsonl"
    with path.open("w", encoding="utf-8") as out:
        export_user(backend, ALICE, out)
    lines = path.read_text(encoding="utf-8").splitlines()
    n = next(i for i, line in enumerate(lines) if '"type":"checkpoint"' in line)
    lines[n] = json.dumps({**json.loads(lines[n]), "checkpoint": "%%% not base64"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UnreadableSource, match="base64"):
        run_import(MuxiExport(path), backend, "tenant_c:carol")
    assert backend.list_sessions(Scope("tenant_c", "carol")) == []


def exported(backend: Backend, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path / "alice.jsonl"
    with path.open("w", encoding="utf-8") as out:
        export_user(backend, ALICE, out)
    return path, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def first(records: list[dict[str, Any]], kind: str) -> int:
    return next(i for i, r in enumerate(records) if r["type"] == kind)


GRAPH_BREAKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "checkpoint as a number": ("checkpoint", {"checkpoint": 12}, "'checkpoint' must be base64"),
    "write value as a list": (
        "checkpoint",
        {
            "writes": [
                {"task_id": "t", "idx": 0, "channel": "c", "serde_type": "json", "value": [1]}
            ]
        },
        "'value' must be base64",
    ),
    "checkpoint without serde type": ("checkpoint", {"serde_type": None}, "not a checkpoint"),
    "write without idx": (
        "checkpoint",
        {"writes": [{"task_id": "t", "channel": "c", "serde_type": "json", "value": ""}]},
        "not a checkpoint record",
    ),
    "item without key": ("store_item", {"key": None}, "not a store item record"),
    "item value as a list": ("store_item", {"value": [1, 2]}, "not a store item record"),
    "item time as text": ("store_item", {"updated_at": "soon"}, "updated_at is not an ISO"),
}


@pytest.mark.parametrize("case", GRAPH_BREAKS)
def test_a_broken_graph_record_writes_nothing(make_backend: Any, tmp_path: Path, case: str) -> None:
    source = make_backend("memory")
    fill(source, ALICE, "alice")
    path, records = exported(source, tmp_path)
    kind, change, match = GRAPH_BREAKS[case]
    n = first(records, kind)
    records[n] = {k: v for k, v in {**records[n], **change}.items() if v is not None}
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    target = make_backend("sqlite")
    with pytest.raises(UnreadableSource, match=match):
        run_import(MuxiExport(path), target, lambda key: key)
    assert target.list_tenants() == []


async def test_async_export_of_graph_data_matches_sync(backend: Backend) -> None:
    fill(backend, ALICE, "alice")
    fill(backend, BOB, "bob")
    sync, asyn = io.StringIO(), io.StringIO()
    counts = export_user(backend, ALICE, sync, now=NOW)
    assert await aexport_user(backend, ALICE, asyn, now=NOW) == counts
    assert counts == {"session": 1, "checkpoint": 2, "store_item": 2}
    assert sync.getvalue() == asyn.getvalue()
    assert "bob" not in asyn.getvalue()


def test_the_document_form_lists_graph_records(backend: Backend) -> None:
    fill(backend, ALICE, "alice")
    doc = export_document(backend, ALICE, now=NOW)
    assert [c["parent_id"] is None for c in doc["checkpoints"]] == [True, False]
    assert sorted(i["key"] for i in doc["store_items"]) == ["fav", "lang"]
    assert doc["counts"] == {"session": 1, "checkpoint": 2, "store_item": 2}


def test_a_dry_run_of_graph_data_writes_nothing(make_backend: Any, tmp_path: Path) -> None:
    source = make_backend("memory")
    fill(source, ALICE, "alice")
    path, _ = exported(source, tmp_path)
    target = make_backend("sqlite")
    report = run_import(MuxiExport(path), target, lambda key: key, dry_run=True)
    assert report.ok and report.totals == {
        "checkpoints": 2,
        "checkpoint_writes": 2,
        "sessions": 1,
        "store_items": 2,
    }
    assert target.list_tenants() == []
    assert target.get_checkpoints(ALICE, CheckpointQuery()) == []


def test_a_section_cannot_take_a_record_type_already_taken() -> None:
    before = list(SECTIONS)
    for types in (("checkpoint",), ("memory",), ("end",), ("fresh", "muxi-isolation-export")):
        clash = Section(types, GRAPH_SECTION.export, GRAPH_SECTION.aexport, GRAPH_SECTION.restore)
        with pytest.raises(ValueError, match="already taken"):
            register_section(clash)
    assert before == SECTIONS
