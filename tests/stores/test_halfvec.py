"""Half-precision vectors (issue 18): ``embedding_precision="half"`` stores the memories'
embeddings as PostgreSQL ``HALFVEC(n)`` with a ``halfvec_cosine_ops`` HNSW index.

On a clustered corpus half precision ranks like full precision (recall@10 >= 0.99 against
it, on the exact and the HNSW path, both halves); the large-user path really runs on the
halfvec index; row-level security and the scope predicates hold on the new column and
query paths; SQLite and the in-memory store refuse it; a store holding the other precision
is refused, naming the setting to use.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from muxi_isolation import ConfigError, InvalidInput, Memory, Scope, load_config
from muxi_isolation.stores import open_configured_backend
from muxi_isolation.stores.graph import ItemQuery, StoreItem
from muxi_isolation.stores.sql import SQLBackend
from muxi_isolation.stores.sql._ann_index import index_name

DIM = 32
BIG = Scope("tenant_a", "big")
SMALL = Scope("tenant_a", "small")
TWIN = Scope("tenant_b", "big")  # same user id, other tenant
PEER = Scope("tenant_a", "peer")  # same tenant, another user


@pytest.fixture(params=["sync", "async"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def search(backend: SQLBackend, way: str, scope: Scope, query: list[float], k: int) -> list[str]:
    if way == "sync":
        hits = backend.search_memories(scope, query, k)
    else:
        hits = asyncio.run(backend.asearch_memories(scope, query, k))
    assert all(m.scope is not None and m.scope.same_user(scope) for m, _ in hits)
    return [m.id for m, _ in hits]


def corpus(seed: int) -> tuple[list[list[float]], dict[Scope, list[Memory]]]:
    """Clustered vectors (12 topics): a large user, a small one, and the large user's twin in
    another tenant holding the same ids."""
    rng = random.Random(seed)
    centers = [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(12)]

    def rows(prefix: str, n: int) -> list[Memory]:
        out = []
        for i in range(n):
            c = rng.choice(centers)
            out.append(Memory(f"{prefix}{i:04d}", prefix, {}, [x + rng.gauss(0, 0.5) for x in c]))
        return out

    return centers, {BIG: rows("m", 600), SMALL: rows("m", 40), TWIN: rows("m", 600)}


def open_pair(make_backend: Any) -> tuple[SQLBackend, SQLBackend]:
    """The same corpus in a full- and a half-precision store (HNSW above 100 rows)."""
    _, data = corpus(11)
    pair = []
    for precision in ("full", "half"):
        backend = make_backend(
            "postgres",
            embedding_dimension="auto",
            ann_threshold=100,
            embedding_precision=precision,
            ann_index_delay=0,
        )
        for scope, memories in data.items():
            backend.upsert_memories(scope, memories)
        pair.append(backend)
    return pair[0], pair[1]


def column_and_index(postgres_admin: Any, backend: SQLBackend) -> tuple[str, str | None]:
    """The embedding column's type and the large user's HNSW index's definition, as the owner."""
    table = backend.tables.memories
    with postgres_admin.connect() as conn:
        column = conn.scalar(
            text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attname = 'embedding'"
            ),
            {"t": f'"{table.schema}"."{table.name}"'},
        )
        index = conn.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND indexname = :i"),
            {"s": table.schema, "i": index_name(backend.tables, BIG.tenant_id, BIG.user_id)},
        )
    return str(column), index


def test_half_precision_ranks_like_full_precision(make_backend: Any, way: str) -> None:
    full, half = open_pair(make_backend)
    centers, _ = corpus(11)
    rng = random.Random(5)
    for scope, path in ((BIG, "hnsw"), (SMALL, "exact"), (TWIN, "hnsw")):
        assert full.search_plan(scope) == half.search_plan(scope) == path
        recalls = []
        for _ in range(20):
            query = [x + rng.gauss(0, 0.5) for x in rng.choice(centers)]
            want = search(full, way, scope, query, 10)
            got = search(half, way, scope, query, 10)
            assert len(got) == len(want) == 10
            recalls.append(len(set(got) & set(want)) / 10)
        assert sum(recalls) / len(recalls) >= 0.99, (scope, path, recalls)


def test_the_column_and_index_are_halfvec_and_searches_use_the_index(
    make_backend: Any, postgres_admin: Any
) -> None:
    _, half = open_pair(make_backend)
    column, index = column_and_index(postgres_admin, half)
    assert column == f"halfvec({DIM})"
    assert index is not None and "halfvec_cosine_ops" in index
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "<=>" in statement and "found" in statement:
            rows = cursor.connection.execute("EXPLAIN " + statement, params).fetchall()
            plans.append("\n".join(r[0] for r in rows))

    event.listen(half._engine, "after_cursor_execute", explain)
    centers, _ = corpus(11)
    assert len(half.search_memories(BIG, centers[0], k=5)) == 5
    assert any("memories_hnsw" in plan for plan in plans), plans


def test_scoping_and_row_level_security_hold_on_halfvec(
    make_backend: Any, postgres_urls: Any, way: str
) -> None:
    backend = make_backend(
        "postgres",
        embedding_dimension="auto",
        embedding_precision="half",
        ann_threshold=2,
        ann_index_delay=0,
    )
    secret = [1.0, 0.5, 0.25]  # the same vector and id for three users
    for scope in (BIG, TWIN, PEER):
        backend.upsert_memories(scope, [Memory("m", f"of {scope}", {}, secret)])
        backend.upsert_memories(scope, [Memory(f"n{i}", "x", {}, [1.0, i, 0.0]) for i in range(3)])
    for scope in (BIG, TWIN, PEER):
        assert backend.search_plan(scope) == "hnsw"
        hits = search(backend, way, scope, secret, 10)
        assert len(hits) == 4 and hits[0] == "m"
        [memory] = [m for m, _ in backend.search_memories(scope, secret, 1)]
        assert memory.content == f"of {scope}"
    assert backend.rls_enforced()
    app = create_engine(postgres_urls.app, poolclass=NullPool)
    table = backend.tables.memories
    try:
        with app.begin() as conn:  # the app's role without a scope: no row of the halfvec table
            rows = conn.execute(
                text(f'SELECT embedding FROM "{table.schema}"."{table.name}"')
            ).all()
            assert rows == []
        with app.begin() as conn:
            backend._enter(conn, BIG, None)
            owners = conn.execute(
                text(
                    f'SELECT tenant_id, user_id FROM "{table.schema}"."{table.name}" '
                    "ORDER BY embedding <=> CAST(:q AS halfvec)"
                ),
                {"q": str(secret)},
            ).all()
            assert set(owners) == {("tenant_a", "big")} and len(owners) == 4
    finally:
        app.dispose()


def test_hybrid_search_and_the_graph_store_on_a_half_precision_store(
    make_backend: Any, way: str
) -> None:
    backend = make_backend("postgres", embedding_precision="half")
    for scope in (BIG, TWIN):
        backend.upsert_memories(
            scope,
            [
                Memory("kw", f"the quorvex valve of {scope.tenant_id}", {}, [0.0, 0.0, 1.0]),
                Memory("near", "weather", {}, [1.0, 0.1, 0.0]),
            ],
        )
    if way == "sync":
        hits = backend.search_memories(BIG, [1.0, 0.0, 0.0], 2, text="quorvex", mode="hybrid")
    else:
        hits = asyncio.run(
            backend.asearch_memories(BIG, [1.0, 0.0, 0.0], 2, text="quorvex", mode="hybrid")
        )
    assert {m.id for m, _ in hits} == {"kw", "near"}
    assert all(m.scope is not None and m.scope.same_user(BIG) for m, _ in hits)
    assert "tenant_a" in next(m.content for m, _ in hits if m.id == "kw")
    # LangGraph store items keep their own float32 vectors (searched exactly): unaffected
    vector = [0.1, 0.2, 0.3000001]
    backend.put_items(BIG, [StoreItem(("facts",), "k", {"v": 1}, embeddings={"v": vector})], [])
    now = datetime.now(timezone.utc)
    [found] = backend.search_items(BIG, ItemQuery(vectors=True), now=now)
    assert found.embeddings == {"v": pytest.approx(vector, rel=1e-7)}
    assert backend.search_items(TWIN, ItemQuery(vectors=True), now=now) == []


def test_a_value_beyond_float16_is_invalid_input_and_writes_nothing(
    make_backend: Any, way: str
) -> None:
    backend = make_backend("postgres", embedding_precision="half")
    batch = [Memory("ok", "x", {}, [1.0, 0.0]), Memory("big", "x", {}, [1e6, 0.0])]
    with pytest.raises(InvalidInput, match="float16") as refused:
        if way == "sync":
            backend.upsert_memories(BIG, batch)
        else:
            asyncio.run(backend.aupsert_memories(BIG, batch))
    assert refused.value.field == "embedding" and "1e+06" not in str(refused.value)
    assert backend.count_memories(BIG) == 0
    backend.upsert_memories(BIG, batch[:1])
    with pytest.raises(InvalidInput, match="float16"):
        backend.search_memories(BIG, [1e6, 0.0], 1)


def test_half_precision_is_refused_off_postgresql(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"half.*PostgreSQL"):
        SQLBackend(f"sqlite:///{tmp_path / 'x.db'}", embedding_precision="half")
    with pytest.raises(ConfigError, match='"full" or "half"'):
        SQLBackend(f"sqlite:///{tmp_path / 'x.db'}", embedding_precision="float16")  # type: ignore[arg-type]
    for persistent in (
        {"provider": "sqlite"},
        {"provider": "memory"},
        {"provider": "postgresql", "connection_string": "postgresql://h/db", "enabled": False},
    ):
        with pytest.raises(ConfigError, match="embedding_precision: half is for provider"):
            load_config({"memory": {"persistent": {**persistent, "embedding_precision": "half"}}})
    with pytest.raises(ConfigError, match="embedding_precision"):
        load_config({"memory": {"persistent": {"embedding_precision": "double"}}})
    config = load_config(
        {
            "memory": {
                "persistent": {
                    "provider": "postgresql",
                    "connection_string": "postgresql://h/db",
                    "embedding_precision": "half",
                }
            }
        }
    )
    backend = open_configured_backend(config)  # opens no connection yet
    try:
        assert isinstance(backend, SQLBackend) and backend.tables.precision == "half"
    finally:
        backend.close()


@pytest.mark.parametrize("dimension", ["auto", DIM])
def test_a_store_of_the_other_precision_is_refused(
    make_backend: Any, way: str, dimension: Any
) -> None:
    for made, other in (("half", "full"), ("full", "half")):
        backend = make_backend("postgres", embedding_dimension=dimension, embedding_precision=made)
        backend.upsert_memories(BIG, [Memory("m", "x", {}, [1.0] * DIM)])
        again = SQLBackend(
            backend._engine.url,
            admin_url=backend._admin[0].url,
            schema=backend.tables.metadata.schema,
            embedding_dimension=dimension,
            embedding_precision=other,
        )
        try:
            with pytest.raises(ConfigError) as refused:
                again.setup() if way == "sync" else asyncio.run(again.asetup())
            message = str(refused.value)
            assert f"holds {made}-precision" in message and f"says {other}" in message
            assert f"configure embedding_precision: {made}" in message
        finally:
            again.close()
        assert [m.id for m, _ in backend.search_memories(BIG, [1.0] * DIM, 1)] == ["m"]


def test_half_precision_indexes_up_to_4000_dimensions(make_backend: Any) -> None:
    wide = [1.0] + [0.0] * 2999  # beyond full precision's HNSW limit of 2000
    for precision, indexed in (("full", False), ("half", True)):
        backend = make_backend(
            "postgres",
            embedding_dimension="auto",
            embedding_precision=precision,
            ann_threshold=1,
            ann_index_delay=0,
        )
        backend.upsert_memories(BIG, [Memory(f"m{i}", "x", {}, wide) for i in range(3)])
        assert backend.tables.hnsw is indexed
        assert backend.search_plan(BIG) == ("hnsw" if indexed else "exact")
        assert len(backend.search_memories(BIG, wide, 2)) == 2


def test_changing_the_dimension_keeps_half_precision(
    make_backend: Any, postgres_admin: Any
) -> None:
    backend = make_backend(
        "postgres",
        embedding_dimension="auto",
        embedding_precision="half",
        ann_threshold=1,
        ann_index_delay=0,
    )
    backend.upsert_memories(BIG, [Memory("m", "x", {}, [1.0, 0.0, 0.0])])
    assert backend.set_embedding_dimension(4, clear=True) == 1
    twice = [Memory("m", "x", {}, [1.0, 0.0, 0.0, 0.0]), Memory("n", "x", {}, [0.0, 1.0, 0.0, 0.0])]
    backend.upsert_memories(BIG, twice)  # past the threshold: the user's index, as halfvec
    column, index = column_and_index(postgres_admin, backend)
    assert column == "halfvec(4)" and index is not None and "halfvec_cosine_ops" in index
    assert [m.id for m, _ in backend.search_memories(BIG, [1.0, 0.0, 0.0, 0.0], 1)] == ["m"]
