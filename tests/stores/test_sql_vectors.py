"""Per-user vector search on the SQL backends: min(k, rows) results, exact or HNSW.

A small ``ann_threshold`` makes a few hundred rows a "large" user, so the HNSW path
(pgvector iterative scan) and its exact fallback run here on real PostgreSQL.
"""

from __future__ import annotations

import math
import random

import pytest
from sqlalchemy import event

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend
from muxi_isolation.stores.sql._ann_index import index_name
from muxi_isolation.stores.sql._schema import create_hnsw

DIM = 8
BIG = Scope("tenant_a", "big")
SMALL = Scope("tenant_a", "small")
OTHER = Scope("tenant_b", "big")  # same user id, other tenant


def clustered(rng: random.Random, n: int, centers: list[list[float]]) -> list[list[float]]:
    out = []
    for _ in range(n):
        c = rng.choice(centers)
        out.append([x + rng.gauss(0, 0.15) for x in c])
    return out


def exact_top(query: list[float], rows: dict[str, list[float]], k: int) -> list[str]:
    def cos(v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(query, v))
        return dot / (math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in v)))

    return [i for i, _ in sorted(rows.items(), key=lambda kv: (-cos(kv[1]), kv[0]))[:k]]


@pytest.fixture
def loaded(make_backend):
    """A PostgreSQL store (dimension 8, HNSW) with one large and one small user."""
    backend = make_backend(
        "postgres", embedding_dimension=DIM, ann_threshold=100, ann_index_delay=0
    )
    rng = random.Random(7)
    centers = [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(6)]
    big = {f"b{i:04d}": v for i, v in enumerate(clustered(rng, 600, centers))}
    small = {f"s{i:03d}": v for i, v in enumerate(clustered(rng, 30, centers))}
    other = {f"o{i:04d}": v for i, v in enumerate(clustered(rng, 600, centers))}
    for scope, rows in ((BIG, big), (SMALL, small), (OTHER, other)):
        backend.upsert_memories(
            scope,
            [
                Memory(i, i, {"even": int(i[1:]) % 2 == 0, "n": int(i[1:])}, v)
                for i, v in rows.items()
            ],
        )
    return backend, rng, centers, big, small


def test_plan_follows_user_size(loaded) -> None:
    backend, *_ = loaded
    assert backend.search_plan(BIG) == "hnsw"
    assert backend.search_plan(SMALL) == "exact"
    assert backend.search_plan(Scope("tenant_a", "nobody")) == "exact"


def test_a_small_share_of_a_big_table_is_searched_exactly(make_backend, postgres_admin) -> None:
    """On a store made before per-user indexes (one shared HNSW index), for users without an
    index of their own: the iterative scan pays only for a large enough share of the table."""
    first = make_backend("postgres", embedding_dimension=2)
    first.setup()
    table = first.tables.memories
    with postgres_admin.begin() as conn:
        create_hnsw(conn, first.tables)
    backend = SQLBackend(
        first._engine.url,
        admin_url=first._admin[0].url,
        schema=table.schema,
        embedding_dimension=2,
        ann_threshold=10,
        ann_index_delay=0,
        ann_min_fraction=0.2,
    )
    try:
        backend.upsert_memories(BIG, [Memory(f"b{i}", "x", {}, [1.0, i]) for i in range(20)])
        backend.upsert_memories(OTHER, [Memory(f"o{i}", "x", {}, [1.0, i]) for i in range(100)])
        with postgres_admin.begin() as conn:  # their own indexes not made yet
            for scope in (BIG, OTHER):
                name = index_name(backend.tables, scope.tenant_id, scope.user_id)
                conn.exec_driver_sql(f'DROP INDEX "{table.schema}"."{name}"')
        with postgres_admin.begin() as conn:
            conn.exec_driver_sql(f'ANALYZE "{table.schema}"."{table.name}"')
        assert backend.search_plan(BIG) == "exact"  # 20 of 120 rows: under a fifth
        assert backend.search_plan(OTHER) == "hnsw"
        assert len(backend.search_memories(BIG, [1.0, 3.0], k=4)) == 4
    finally:
        backend.close()


@pytest.mark.parametrize("scope", [BIG, SMALL])
def test_results_fill_k_and_match_exact(loaded, scope: Scope) -> None:
    backend, rng, centers, big, small = loaded
    rows = big if scope == BIG else small
    recalls = []
    for _ in range(10):
        query = [x + rng.gauss(0, 0.3) for x in rng.choice(centers)]
        hits = backend.search_memories(scope, query, k=10)
        assert len(hits) == min(10, len(rows))
        assert all(m.scope is not None and m.scope.same_user(scope) for m, _ in hits)
        sims = [s for _, s in hits]
        assert sims == sorted(sims, reverse=True)
        truth = exact_top(query, rows, 10)
        recalls.append(len({m.id for m, _ in hits} & set(truth)) / len(truth))
    assert min(recalls) >= 0.9 and sum(recalls) / len(recalls) >= 0.95


def test_similarity_is_one_minus_cosine_distance(loaded) -> None:
    backend, _, _, big, _ = loaded
    target = big["b0001"]
    [(memory, similarity)] = backend.search_memories(BIG, target, k=1)
    assert memory.id == "b0001" and similarity == pytest.approx(1.0, abs=1e-5)


def test_selective_filter_falls_back_to_exact(loaded) -> None:
    backend, rng, centers, big, _ = loaded
    wanted = {i: v for i, v in big.items() if int(i[1:]) < 12}  # 12 of 600 rows
    query = [x + rng.gauss(0, 0.3) for x in centers[0]]
    hits = backend.search_memories(BIG, query, k=10, filter={"n": {"$lt": 12}})
    assert [m.id for m, _ in hits] == exact_top(query, wanted, 10)


def test_k_larger_than_rows_returns_every_row(loaded) -> None:
    backend, _, centers, _, small = loaded
    hits = backend.search_memories(SMALL, centers[1], k=500)
    assert sorted(m.id for m, _ in hits) == sorted(small)
    hits = backend.search_memories(BIG, centers[1], k=10, filter={"even": True, "n": {"$lt": 40}})
    assert len(hits) == 10 and all(int(m.id[1:]) % 2 == 0 for m, _ in hits)


def test_hnsw_path_is_an_hnsw_query(loaded) -> None:
    """The large-user path runs on the HNSW index: EXPLAIN the very statement sent, in its
    own transaction (where the store priced sorting out: on 1,230 rows a scan looks cheaper)."""
    backend, _, centers, _, _ = loaded
    plans: list[str] = []
    settings: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany) -> None:
        if "set_config" in statement:
            settings.extend(str(v) for v in parameters.values())
        if "<=>" in statement and "found" in statement:
            rows = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            plans.append("\n".join(r[0] for r in rows))

    event.listen(backend._engine, "after_cursor_execute", explain)
    assert len(backend.search_memories(BIG, centers[0], k=5)) == 5
    assert len(plans) == 1 and "memories_hnsw" in plans[0], plans
    assert "relaxed_order" in settings and "off" in settings


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_fixed_dimension_is_checked(make_backend, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension=3)
    with pytest.raises(ValueError):
        backend.upsert_memories(BIG, [Memory("x", "x", {}, [1.0, 0.0])])
    assert backend.count_memories(BIG) == 0
    backend.upsert_memories(BIG, [Memory("x", "x", {}, [1.0, 0.0, 0.0])])
    with pytest.raises(ValueError):
        backend.search_memories(BIG, [1.0, 0.0])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_mixed_dimensions_without_a_fixed_one_are_a_value_error(make_backend, kind: str) -> None:
    backend = make_backend(kind)
    backend.upsert_memories(BIG, [Memory("x", "x", {}, [1.0, 0.0, 0.0])])
    with pytest.raises(ValueError):
        backend.search_memories(BIG, [1.0, 0.0])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_exact_search_matches_python(make_backend, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension=DIM)
    rng = random.Random(3)
    rows = {f"m{i:03d}": [rng.gauss(0, 1) for _ in range(DIM)] for i in range(200)}
    backend.upsert_memories(SMALL, [Memory(i, i, {}, v) for i, v in rows.items()])
    for _ in range(5):
        query = [rng.gauss(0, 1) for _ in range(DIM)]
        hits = backend.search_memories(SMALL, query, k=7)
        assert [m.id for m, _ in hits] == exact_top(query, rows, 7)


def test_zero_vector_scores_zero(make_backend) -> None:
    for kind in ("sqlite", "postgres"):
        backend = make_backend(kind)
        backend.upsert_memories(SMALL, [Memory("z", "z", {}, [0.0, 0.0])])
        [(memory, similarity)] = backend.search_memories(SMALL, [1.0, 0.0], k=3)
        assert memory.id == "z" and similarity == 0.0


def test_sqlbackend_is_what_open_backend_gives(tmp_path) -> None:
    from muxi_isolation.stores import open_backend

    backend = open_backend(f"sqlite:///{tmp_path / 'x.db'}", embedding_dimension=4)
    try:
        assert isinstance(backend, SQLBackend) and backend.tables.dimension == 4
    finally:
        backend.close()


def _plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


@pytest.mark.parametrize("statement", ["_exact_stmt", "_gated_stmt", "_counted_stmt"])
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
def test_exact_search_reads_only_the_top_k_rows_whole(
    make_backend, postgres_admin, statement: str, analyzed: bool
) -> None:
    """The exact search scores ids and distances, then reads its top k rows whole by key.
    A join back planned from a guessed row count (a table not yet analyzed) once read every
    row of the user whole once per hit: 31 ms for a 3,683-row user against 2 ms.
    EXPLAIN ANALYZE the store's statement as the app role, under the user's scope."""
    from muxi_isolation.stores.sql import _rls

    backend = make_backend("postgres", embedding_dimension=DIM)
    rng = random.Random(11)
    rows = [
        Memory(f"m{i:04d}", "x" * 200, {}, [rng.gauss(0, 1) for _ in range(DIM)])
        for i in range(1500)
    ]
    backend.upsert_memories(BIG, rows)
    if analyzed:
        with postgres_admin.begin() as conn:
            conn.exec_driver_sql(
                f'ANALYZE "{backend.tables.memories.schema}".{backend.tables.memories.name}'
            )
    v = backend.vectors
    stmt = getattr(v, statement)
    params = v._params(BIG, query_vector=rows[0].embedding, muxi_k=5, muxi_cap=v.ann_threshold + 1)
    with backend._engine.connect() as conn, conn.begin():
        conn.execute(
            _rls.enter_statement(conn, backend.tables), _rls.enter_params(BIG, backend._scope_key)
        )
        compiled = stmt.compile(dialect=conn.dialect)
        bound = compiled.construct_params(params)
        bound = {k: compiled._bind_processors.get(k, lambda x: x)(x) for k, x in bound.items()}
        found = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, bound)
        plan = found.scalar()[0]["Plan"]
        hits = conn.execute(stmt, params).all()
    assert hits[0].id == "m0000" and len(hits) == 5
    read = [
        n["Actual Rows"] * n["Actual Loops"]
        for n in _plan_nodes(plan)
        if n.get("Relation Name") == backend.tables.memories.name
    ]
    counted = [1500] if statement == "_gated_stmt" else []  # its capped count's own scan
    assert sorted(read) == [5, 1500, *counted], read  # the scored scan, the top k by key
