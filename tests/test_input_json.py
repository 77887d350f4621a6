"""check_json's quick path (the serialized text, no walk) refuses exactly what the walk does."""

from __future__ import annotations

import pytest

from muxi_isolation import InvalidInput
from muxi_isolation._input import check_json


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"deep": [{"k\x00": 1}]}, "NUL"),  # a key, escaped to \u0000 in the text
        (["fine", {"x": "a\x00"}], "NUL"),
        ([{"\ud800": "v"}], "lone surrogates"),  # a key that does not encode
        ({"k": ["\udfff"]}, "lone surrogates"),
        ("a\\u0000 then a real \x00", "NUL"),  # a literal \u0000 next to a real NUL
    ],
)
def test_strings_no_backend_stores_are_refused_anywhere(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_json(value, "message content")


@pytest.mark.parametrize(
    "value",
    [
        ["a literal \\u0000 is text", {"\\u0000": "\\\\u0000"}],  # backslash, u, 0000
        {"emoji": "\U0001f600", "sep": "\u2028", "ctl": "\x01\x1f", "e": "é"},
        [1, 2.5, None, True, {"1": []}],
    ],
)
def test_storable_values_pass(value: object) -> None:
    check_json(value, "message content")
