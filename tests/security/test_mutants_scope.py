"""Scope rules that mutation testing (bench/mutation.py) found unchecked.

Each test names the mutant it kills: a change to ``muxi_isolation/scope.py`` that the rest
of the suite let through.
"""

from __future__ import annotations

import pytest

from muxi_isolation import InvalidIdentifier, Scope
from muxi_isolation.scope import canonical_id


@pytest.mark.parametrize("header", [None, "bob", "tenant_a:bob"])
def test_parse_keeps_the_session(header: str | None) -> None:
    # a parse that dropped session_id would put a chat message in the user's session-less
    # scope: every header form must carry the session through
    assert Scope.parse(header, "s1").session_id == "s1"


@pytest.mark.parametrize("field", ["tenant_id", "user_id", "session_id"])
def test_lone_surrogate_is_refused_in_every_field(field: str) -> None:
    # no database stores a lone surrogate; an encoder that replaced it with '?' would map
    # two different ids onto one stored id
    ids = {"tenant_id": "t", "user_id": "u", "session_id": "s"}
    ids[field] = "a\ud800b"
    with pytest.raises(InvalidIdentifier) as caught:
        Scope(**ids)
    assert caught.value.field == field
    assert "surrogate" in caught.value.rule


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (7, "must be a string, not int"),
        ("", "must not be empty"),
        ("x" * 256, "at most 255"),
        ("a\x00b", "control"),
        (" a", "whitespace"),
    ],
)
def test_each_rule_names_the_field(value: object, rule: str) -> None:
    # the field travels to HTTP error bodies: a client must learn which id it got wrong
    with pytest.raises(InvalidIdentifier) as caught:
        canonical_id(value, "session_id")
    assert caught.value.field == "session_id"
    assert rule in caught.value.rule
    with pytest.raises(InvalidIdentifier) as caught:
        canonical_id(value)
    assert caught.value.field == "id"


def test_colon_in_tenant_names_tenant_id() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        Scope("a:b", "u")
    assert caught.value.field == "tenant_id"
    assert "':'" in caught.value.rule


def test_non_string_header_names_user_id() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        Scope.parse(42)  # type: ignore[arg-type]
    assert caught.value.field == "user_id"
    assert caught.value.rule == "must be a string"
