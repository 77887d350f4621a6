from __future__ import annotations

import math

import pytest

from muxi_isolation import InvalidFilter
from muxi_isolation.filters import And, Compare, Not, Or, filter_keys, matches, parse_filter


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
]


@pytest.mark.parametrize("spec", BAD)
def test_bad_filters_are_refused(spec: object) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(spec)  # type: ignore[arg-type]


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
