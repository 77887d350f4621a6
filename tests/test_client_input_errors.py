"""The client rebuilds the server's input errors as the typed errors the core raises."""

from __future__ import annotations

import httpx
import pytest

from muxi_isolation import InvalidFilter, InvalidIdentifier, InvalidInput, IsolationError
from muxi_isolation.client import raise_for_error
from muxi_isolation.http import error_response


@pytest.mark.parametrize(
    "exc",
    [
        InvalidInput("message must not contain NUL", field="message"),
        InvalidInput("limit must be a non-negative integer"),
        InvalidFilter("filter integers must be from ..."),
        InvalidIdentifier("session_id", "must not be empty"),
    ],
)
def test_input_errors_come_back_typed(exc: IsolationError) -> None:
    status, body = error_response(exc)
    with pytest.raises(type(exc)) as caught:
        raise_for_error(httpx.Response(status, json=body))
    assert type(caught.value) is type(exc)
    assert str(caught.value) == str(exc)
    assert getattr(caught.value, "field", None) == getattr(exc, "field", None)
