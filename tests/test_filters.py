from __future__ import annotations

import math

import pytest

from muxi_isolation import InvalidFilter
from muxi_isolation.filters import (
    And,
    Compare,
    Not,
    Or,
    check_filter,
    filter_keys,
    matches,
    parse_filter,
)


def test_parse_shapes() -> None:
    assert parse_filter(None) is None
    assert parse_filter({}) is None
    assert parse_filter({"a": 1}) == Compare("a", "$eq", 1)
    assert parse_filter({"a": {"$gte": 1, "$lt": 3}}) == And(
        (Compare("a", "$gte", 1), Compare("a", "$lt", 3))
    )
    assert parse_filter({"$or": [{"a": 1}, {"$not": {"b": {"$in": [1, "x"]}}}]}) == Or(
        (Compare("a", "$eq", 1), Not(Compare("b", "$in", (1, "x"))))
    )
    assert parse_filter({"a": 1, "$and": [{"b": 2}]}) == And(
        (Compare("a", "$eq", 1), And((Compare("b", "$eq", 2),)))
    )


BAD = [
    ["not", "a", "dict"],
    {"$or": []},
    {"$and": {"a": 1}},
    {"$nor": [{"a": 1}]},
    {"a": {"$regex": ".*"}},
    {"a": {"$where": "1"}},
    {"a": {}},
    {"a": {"$in": "x"}},
    {"a": {"$exists": "yes"}},
    {"a": {"$gt": None}},
    {"a": {"$gt": True}},
    {"a": {"$in": [None]}},
    {"a": {"$text": 3}},
    {"a": [1, 2]},
    {"a": {"$eq": {"$ne": 1}}},
    {"a": math.nan},
    {"a": math.inf},
    {"": 1},
    {'a"b': 1},
    {"a\\b": 1},
    {"a\x00": 1},
    {"k" * 129: 1},
    {"$not": []},
    {"$or": [1]},
    {1: 1},
    # beyond 64 bits, NUL, lone surrogates: no backend could store or bind them
    {"a": 2**63},
    {"a": -(2**63) - 1},
    {"a": {"$in": [1, 2**64]}},
    {"a": {"$gt": 2**63}},
    {"a": {"$all": [2**70]}},
    {"a": "x\x00"},
    {"a": {"$text": "\ud800"}},
    {"a": {"$nin": ["ok", "\udfff"]}},
    {"a\ud800": 1},
]


@pytest.mark.parametrize("spec", BAD)
def test_bad_filters_are_refused(spec: object) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(spec)  # type: ignore[arg-type]


def test_the_64_bit_edges_are_accepted() -> None:
    assert parse_filter({"a": 2**63 - 1}) == Compare("a", "$eq", 2**63 - 1)
    assert parse_filter({"a": {"$gt": -(2**63)}}) == Compare("a", "$gt", -(2**63))


GOOD_TREES = [
    Compare("a", "$eq", 1),
    Or((Compare("a", "$in", [1, "x"]), Not(Compare("b", "$exists", True)))),
    And((Compare("a", "$gte", 1), Compare("a", "$lt", 3))),
]


@pytest.mark.parametrize("node", GOOD_TREES)
def test_hand_built_trees_pass_as_the_parser_would_build_them(node: object) -> None:
    checked = check_filter(node)  # type: ignore[arg-type]
    assert checked == parse_filter(_as_dict(checked))
    assert check_filter(None) is None


def _as_dict(node: object) -> dict[str, object]:
    if isinstance(node, Compare):
        return {
            node.key: {node.op: list(node.value) if isinstance(node.value, tuple) else node.value}
        }
    if isinstance(node, Not):
        return {"$not": _as_dict(node.item)}
    assert isinstance(node, (And, Or))
    return {"$and" if isinstance(node, And) else "$or": [_as_dict(i) for i in node.items]}


BAD_TREES = [
    Compare("a", "$eq", 2**64),
    Compare("a", "$regex", ".*"),
    Compare("a", "$in", "x"),
    Compare("a", "$eq", object()),
    Compare("muxi\x00", "$eq", 1),
    Compare("a", "$text", "\ud800"),
    Or(()),
    And((Compare("a", "$eq", 1), None)),  # type: ignore[arg-type]
    Not(Or((Compare("a", "$gt", None),))),
    "not a node",
]


@pytest.mark.parametrize("node", BAD_TREES)
def test_hand_built_trees_get_the_parsers_checks(node: object) -> None:
    with pytest.raises(InvalidFilter):
        check_filter(node)  # type: ignore[arg-type]


def test_hand_built_depth_is_bounded() -> None:
    node: object = Compare("a", "$eq", 1)
    for _ in range(40):
        node = Not(node)  # type: ignore[arg-type]
    with pytest.raises(InvalidFilter, match="deeper"):
        check_filter(node)  # type: ignore[arg-type]


def test_depth_is_bounded() -> None:
    spec: dict[str, object] = {"a": 1}
    for _ in range(40):
        spec = {"$not": spec}
    with pytest.raises(InvalidFilter, match="deeper"):
        parse_filter(spec)


def test_filter_keys_walks_the_tree() -> None:
    node = parse_filter({"$or": [{"a": 1}, {"$not": {"b": 2}}, {"$and": [{"c": 3}]}]})
    assert sorted(filter_keys(node)) == ["a", "b", "c"]
    assert list(filter_keys(None)) == []


def test_matches_semantics() -> None:
    meta = {"n": 1, "f": 1.5, "b": True, "s": "abc", "l": [1, "x"], "z": None}
    yes = [
        {"n": 1.0},
        {"b": True},
        {"s": {"$text": "b"}},
        {"l": {"$contains": 1}},
        {"l": {"$all": [1, "x"]}},
        {"l": {"$any": ["q", "x"]}},
        {"z": None},
        {"n": {"$in": [3, 1]}},
        {"n": {"$nin": [2]}},
        {"f": {"$gt": 1, "$lt": 2}},
        {"q": {"$exists": False}},
        {"$not": {"q": 1}},
        {"s": {"$gte": "abc"}},
    ]
    no = [
        {"n": True},
        {"b": 1},
        {"s": {"$text": "B"}},
        {"l": {"$contains": "1"}},
        {"s": {"$contains": "a"}},
        {"q": {"$ne": 1}},
        {"q": {"$nin": [1]}},
        {"n": {"$gt": "0"}},
        {"z": {"$ne": None}},
        {"l": {"$all": [1, 2]}},
        {"b": {"$lt": 5}},
    ]
    for spec in yes:
        assert matches(parse_filter(spec), meta), spec
    for spec in no:
        assert not matches(parse_filter(spec), meta), spec
    assert matches(None, meta)
