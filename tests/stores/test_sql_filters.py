"""The SQL filter compiler agrees with ``filters.matches`` on random filters and records.

FILTER_CASES in the storage suite pin the documented cases; here hypothesis searches for
disagreements (NULL under NOT, 1 vs 1.0 vs true, strings that look like numbers, code-point
order, arrays of mixed types) on real SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxi_isolation import Memory, Scope
from muxi_isolation.filters import matches, parse_filter

KEYS = ["a", "b"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1, 2),
    st.sampled_from([0.0, 1.0, 2.5]),
    st.sampled_from(["", "a", "B", "ab", "1", "é", "Z", "%", "_", "a%", "😀"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
metadata = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)

non_null = scalars.filter(lambda v: v is not None)
ordered = st.one_of(
    st.integers(-1, 2), st.sampled_from([1.0, 2.5]), st.sampled_from(["", "a", "B", "é", "😀"])
)


def compare() -> st.SearchStrategy[dict[str, Any]]:
    key = st.sampled_from(KEYS)
    op = st.one_of(
        st.tuples(st.just("$eq"), scalars),
        st.tuples(st.just("$ne"), scalars),
        st.tuples(st.sampled_from(["$lt", "$lte", "$gt", "$gte"]), ordered),
        st.tuples(st.sampled_from(["$in", "$nin", "$any", "$all"]), st.lists(non_null, max_size=3)),
        st.tuples(st.just("$contains"), non_null),
        st.tuples(st.just("$exists"), st.booleans()),
        st.tuples(st.just("$text"), st.sampled_from(["", "a", "%", "_", "é", "b"])),
    )
    return st.builds(lambda k, o: {k: {o[0]: o[1]}}, key, op)


filters = st.recursive(
    compare(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=5,
)

_users = itertools.count()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_filters_agree_with_matches(make_backend, kind: str) -> None:
    backend = make_backend(kind)

    @settings(
        max_examples=100 if kind == "postgres" else 250,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(records=st.lists(metadata, min_size=1, max_size=10), spec=filters)
    def check(records: list[dict[str, Any]], spec: dict[str, Any]) -> None:
        user = Scope("t", f"u{next(_users)}")
        rows = [Memory(f"m{i}", "x", meta) for i, meta in enumerate(records)]
        backend.upsert_memories(user, rows)
        node = parse_filter(spec)
        want = {f"m{i}" for i, meta in enumerate(records) if matches(node, meta)}
        assert {m.id for m in backend.list_memories(user, filter=spec)} == want, spec

    check()


TRICKY = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    2.5,
    "",
    "1",
    "a",
    "B",
    "é",
    "😀",
    "a%",
    "_",
    [],
    [1],
    [1.0, "a"],
    [True],
    [None],
    ["a", "b"],
    [[1]],
    {"x": 1},
]
OPERANDS = [None, True, False, 0, 1, 1.0, 2.5, -1, "", "1", "a", "B", "é", "😀", "%", "_"]


def every_comparison() -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [{"a": {"$exists": True}}, {"a": {"$exists": False}}]
    for v in OPERANDS:
        specs += [{"a": {"$eq": v}}, {"a": {"$ne": v}}]
        if v is not None:
            specs.append({"a": {"$contains": v}})
            specs += [{"a": {op: [v]}} for op in ("$in", "$nin", "$any", "$all")]
        if v is not None and not isinstance(v, bool):
            specs += [{"a": {op: v}} for op in ("$lt", "$lte", "$gt", "$gte")]
        if isinstance(v, str):
            specs.append({"a": {"$text": v}})
    specs += [{"a": {"$in": []}}, {"a": {"$nin": []}}, {"a": {"$all": []}}, {"a": {"$any": []}}]
    return [s for s in specs if s["a"]]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_single_comparison_and_its_negation_agree(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    user = Scope("t", "table")
    records = {f"r{i}": {"a": v} for i, v in enumerate(TRICKY)} | {"missing": {"b": 1}}
    backend.upsert_memories(user, [Memory(i, "x", meta) for i, meta in records.items()])
    for spec in every_comparison():
        for full in (spec, {"$not": spec}):
            node = parse_filter(full)
            want = {i for i, meta in records.items() if matches(node, meta)}
            assert {m.id for m in backend.list_memories(user, filter=full)} == want, full


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_operator_the_compiler_does_not_know_is_an_invalid_filter(dialect: str) -> None:
    from sqlalchemy import column

    from muxi_isolation import InvalidFilter
    from muxi_isolation.filters import Compare
    from muxi_isolation.stores.sql._filters import compile_filter

    with pytest.raises(InvalidFilter, match="unknown operator"):
        compile_filter(Compare("a", "$regex", ".*"), column("metadata"), dialect)
