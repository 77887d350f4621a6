"""An embedding holding NaN or an infinity is refused on every backend and both halves, and
nothing is stored; the check's quick path (a finite sum) decides only finite vectors."""

from __future__ import annotations

import asyncio

import pytest

from muxi_isolation import InvalidInput, Memory, Scope
from muxi_isolation.stores.base import Backend

ALICE = Scope("tenant_a", "alice")
NAN, INF = float("nan"), float("inf")
BAD = {
    "nan": [1.0, NAN, 0.0],
    "inf": [INF, 1.0, 0.0],
    "-inf": [0.0, 1.0, -INF],
    "inf and -inf (their sum is NaN)": [INF, -INF, 0.0],
    "huge, then NaN (the sum overflows first)": [1e308, 1e308, NAN],
}


@pytest.mark.parametrize("half", ["sync", "async"])
@pytest.mark.parametrize("vector", list(BAD.values()), ids=list(BAD))
def test_a_non_finite_embedding_is_refused_and_nothing_is_stored(
    backend: Backend, vector: list[float], half: str
) -> None:
    batch = [Memory("ok", "fine", {}, [1.0, 0.5, 0.0]), Memory("bad", "x", {}, vector)]
    with pytest.raises(InvalidInput, match="finite"):
        if half == "sync":
            backend.upsert_memories(ALICE, batch)
        else:
            asyncio.run(backend.aupsert_memories(ALICE, batch))
    assert backend.list_memories(ALICE) == []
