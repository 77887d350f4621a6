from __future__ import annotations

import pytest

from muxi_isolation import DEFAULT_TENANT, DEFAULT_USER, InvalidIdentifier, Scope
from muxi_isolation.scope import canonical_id

PARSE_CASES = [
    ("user_123", (DEFAULT_TENANT, "user_123")),
    ("tenant_a:user_1", ("tenant_a", "user_1")),
    ("tenant_a:user:1", ("tenant_a", "user:1")),  # split at the first ':'
    ("t:u:v:w", ("t", "u:v:w")),
    (None, (DEFAULT_TENANT, DEFAULT_USER)),
    ("0", (DEFAULT_TENANT, "0")),
    ("default:bob", (DEFAULT_TENANT, "bob")),
    ("cafe\u0301", (DEFAULT_TENANT, "caf\u00e9")),  # NFC: decomposed == composed
    ("x" * 255, (DEFAULT_TENANT, "x" * 255)),
    ("用户", (DEFAULT_TENANT, "用户")),
    ("a b", (DEFAULT_TENANT, "a b")),
    ("%_'\"", (DEFAULT_TENANT, "%_'\"")),
]


@pytest.mark.parametrize(("header", "expected"), PARSE_CASES)
def test_parse(header: str | None, expected: tuple[str, str]) -> None:
    scope = Scope.parse(header)
    assert (scope.tenant_id, scope.user_id, scope.session_id) == (*expected, None)


@pytest.mark.parametrize(("header", "_"), PARSE_CASES)
def test_header_round_trips(header: str | None, _: object) -> None:
    scope = Scope.parse(header)
    assert Scope.parse(scope.header) == scope


def test_canonical_header_forms() -> None:
    assert Scope.parse("user_123").header == "user_123"
    assert Scope.parse("tenant_a:user_1").header == "tenant_a:user_1"
    assert Scope.parse("default:bob").header == "bob"
    assert Scope(DEFAULT_TENANT, "x:y").header == "default:x:y"  # keeps its meaning
    assert Scope.parse(None).header == "0"


BAD_IDS = [
    ("", "must not be empty"),
    ("x" * 256, "at most 255"),
    ("a\x00b", "control"),
    ("a\nb", "control"),
    ("a\tb", "control"),
    ("a\x7fb", "control"),
    ("a\u2028b", "control"),
    (" bob", "whitespace"),
    ("bob ", "whitespace"),
    ("\u3000bob", "whitespace"),
    (":bob", "tenant_id: must not be empty"),
    ("tenant:", "user_id: must not be empty"),
    ("tenant: bob", "whitespace"),
]


@pytest.mark.parametrize(("header", "rule"), BAD_IDS)
def test_bad_ids_name_the_rule(header: str, rule: str) -> None:
    with pytest.raises(InvalidIdentifier, match=rule):
        Scope.parse(header)


def test_invalid_identifier_carries_field_and_rule() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        Scope("tenant_a", "ok", "bad\x00")
    assert info.value.field == "session_id"
    assert "control" in info.value.rule
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [1, b"bytes", ["x"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidIdentifier, match="must be a string"):
        canonical_id(value, "user_id")
    with pytest.raises(InvalidIdentifier):
        Scope.parse(value)  # type: ignore[arg-type]


def test_tenant_may_not_contain_colon() -> None:
    with pytest.raises(InvalidIdentifier, match="':'"):
        Scope("a:b", "u")


def test_distinct_pairs_never_collide() -> None:
    pairs = [
        ("a", "b:c"),
        ("a:b", "c"),
        (DEFAULT_TENANT, "a:b:c"),
        ("a", "b"),
        (DEFAULT_TENANT, "a:b"),
    ]
    headers = set()
    for tenant, user in pairs:
        try:
            scope = Scope(tenant, user)
        except InvalidIdentifier:
            continue
        headers.add(scope.header)
        assert Scope.parse(scope.header) == scope
    assert len(headers) == 4  # ("a:b", "c") is refused; the rest stay distinct


def test_scope_helpers() -> None:
    s = Scope("t", "u", "s1")
    assert s.user() == Scope("t", "u")
    assert s.user().user() == Scope("t", "u")
    assert s.user().with_session("s2") == Scope("t", "u", "s2")
    assert s.same_user(Scope("t", "u", "other"))
    assert not s.same_user(Scope("t2", "u", "s1"))
    assert str(s) == "t:u#s1"
    assert str(Scope("t", "u")) == "t:u"
    with pytest.raises(AttributeError):
        s.user_id = "x"  # type: ignore[misc]
