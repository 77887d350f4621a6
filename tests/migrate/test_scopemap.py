"""From a source key to its owner: templates, mappings and callables, validated."""

from __future__ import annotations

from typing import Any

import pytest

from muxi_isolation import ConfigError, InvalidIdentifier, Scope
from muxi_isolation.migrate import ImportReport, Problem, Skip, scope_mapper
from muxi_isolation.migrate._scopemap import load_mapping


@pytest.mark.parametrize(
    ("template", "key", "expected"),
    [
        ("{tenant}:{user}:{session}", "tenant_a:u1:chat42", Scope("tenant_a", "u1", "chat42")),
        ("{tenant}:{user}:{session}", "a:b:c:d", Scope("a", "b", "c:d")),
        ("{tenant}/{user}", "t/u/v", Scope("t", "u/v")),
        ("{user}", "anyone", Scope("default", "anyone")),
        ("users/{user}.{*}", "users/ann.json", Scope("default", "ann")),
        ("tenant_a:user_1", "whatever key", Scope("tenant_a", "user_1")),
        ("{tenant}__{user}", "t%_x__u", Scope("t%_x", "u")),  # literal, no wildcard
    ],
)
def test_templates(template: str, key: str, expected: Scope) -> None:
    assert scope_mapper(template)(key) == expected


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("{tenant}:{user}", "no-colon"),
        ("{tenant}:{user}", "t: padded"),
        ("{tenant}:{user}:{session}", "t:u:"),
        ("x-{user}", "y-user"),
    ],
)
def test_keys_a_template_cannot_map(template: str, key: str) -> None:
    with pytest.raises(InvalidIdentifier):
        scope_mapper(template)(key)


@pytest.mark.parametrize("template", ["{tenant}:{usr}", "{tenant}:{tenant}", "{session}", "{"])
def test_malformed_templates(template: str) -> None:
    with pytest.raises(ConfigError):
        scope_mapper(template)


def test_mappings_and_callables() -> None:
    table: dict[str, Any] = {
        "k1": "tenant_a:alice",
        "k2": {"tenant": "t", "user": "u", "session": "s"},
        "k3": Scope("t", "v"),
        "k4": None,
        "k5": {"user": "u", "colour": "red"},
        "k6": {"tenant": "t"},
        "k7": 7,
    }
    mapper = scope_mapper(table)
    assert mapper("k1") == Scope("tenant_a", "alice")
    assert mapper("k2") == Scope("t", "u", "s")
    assert mapper("k3") == Scope("t", "v")
    for key in ("k4", "missing"):
        with pytest.raises(Skip):
            mapper(key)
    for key in ("k5", "k6", "k7"):
        with pytest.raises(InvalidIdentifier):
            mapper(key)
    assert scope_mapper(lambda k: f"tenant_x:{k}")("bob") == Scope("tenant_x", "bob")
    with pytest.raises(ConfigError):
        scope_mapper(42)  # type: ignore[arg-type]


def test_load_mapping(tmp_path: Any) -> None:
    assert load_mapping() is None
    assert load_mapping(template="{user}") == "{user}"
    path = tmp_path / "m.json"
    path.write_text('{"a": "t:u", "1": {"user": "v"}}', encoding="utf-8")
    assert load_mapping(file=path) == {"a": "t:u", "1": {"user": "v"}}
    assert load_mapping(python="os.path:basename") is not None
    listed = tmp_path / "list.yaml"
    listed.write_text("- tenant_a:alice\n- tenant_a:bob\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of key -> owner"):
        load_mapping(file=listed)
    for bad in (
        {"template": "{x}"},
        {"file": tmp_path / "none.yaml"},
        {"python": "os.path:nope"},
        {"python": "os:sep"},
        {"template": "{user}", "python": "os.path:basename"},
    ):
        with pytest.raises(ConfigError):
            load_mapping(**bad)


def test_report_format_and_dict() -> None:
    report = ImportReport("src", dry_run=True)
    report.add("t:a", "messages", 3)
    report.add("t:a", "sessions")
    report.add("t:b", "memories", 2)
    report.add("t:b", "memories", 0)
    report.errors.append(Problem("k9", "no valid owner: bad"))
    assert report.totals == {"memories": 2, "messages": 3, "sessions": 1}
    assert not report.ok
    text = report.format()
    assert "dry run: nothing written" in text and "error: k9: no valid owner: bad" in text
    assert report.to_dict()["scopes"] == {
        "t:a": {"messages": 3, "sessions": 1},
        "t:b": {"memories": 2},
    }
    report.errors += [Problem(f"k{n}", "no valid owner") for n in range(10, 30)]
    lines = report.format(limit=5).splitlines()
    assert [line for line in lines if "error:" in line][-1] == "  error: k13: no valid owner"
    assert lines[-1] == "  ... and 16 more errors"
    assert "errors 21" in report.format(limit=5)
