"""Per-user HNSW indexes on PostgreSQL (issue 15 item 2, ``_ann_index``).

No shared HNSW index: a user gets an index of their own when a write takes them past
``ann_threshold`` (100 here), their searches run on it (EXPLAIN of the very statement the
store sends, with its parameters, as the app role), nobody else's search can use it, and
forgetting the user or the tenant drops it. Both halves (sync and async) and odd ids.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from muxi_isolation import Memory, Scope
from muxi_isolation.stores.sql import SQLBackend
from muxi_isolation.stores.sql._ann_index import Deferred, index_name
from muxi_isolation.stores.sql._schema import create_hnsw
from muxi_isolation.stores.sql._transactions import Call
from muxi_isolation.stores.sql._vectors import Search

DIM = 16
THRESHOLD = 100
BIG = Scope("tenant_a", "big")
SMALL = Scope("tenant_a", "small")
TWIN = Scope("tenant_b", "big")  # same user id, other tenant
ODD = Scope("t'en%ant\\", "u'1\"; DROP TABLE x; --")  # quoted as literals, never pasted


@pytest.fixture(params=["sync", "async"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def centers(seed: int = 3) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(8)]


def rows(prefix: str, n: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        c = rng.choice(centers())
        out[f"{prefix}{i:04d}"] = [x + rng.gauss(0, 0.6) for x in c]
    return out


def write(
    backend: SQLBackend, way: str, scope: Scope, data: dict[str, list[float]], *, build: bool = True
) -> None:
    """In batches of 50, as a loader would: the threshold is crossed inside the load; then
    (``build``) the builds waiting for the writes to pause are run, as a loader ends."""
    items = [Memory(i, i, {}, v) for i, v in data.items()]
    for start in range(0, len(items), 50):
        batch = items[start : start + 50]
        if way == "sync":
            backend.upsert_memories(scope, batch)
        else:
            asyncio.run(backend.aupsert_memories(scope, batch))
    if build and way == "sync":
        assert backend.build_indexes(timeout=60)
    elif build:
        assert asyncio.run(backend.abuild_indexes(timeout=60))


def search(backend: SQLBackend, way: str, scope: Scope, query: list[float], k: int) -> list[str]:
    if way == "sync":
        hits = backend.search_memories(scope, query, k)
    else:
        hits = asyncio.run(backend.asearch_memories(scope, query, k))
    assert all(m.scope is not None and m.scope.same_user(scope) for m, _ in hits)
    return [m.id for m, _ in hits]


def exact_top(query: list[float], data: dict[str, list[float]], k: int) -> list[str]:
    def cos(v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(query, v, strict=True))
        return dot / (math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in v)))

    return [i for i, _ in sorted(data.items(), key=lambda kv: (-cos(kv[1]), kv[0]))[:k]]


def hnsw_indexes(postgres_admin: Any, backend: SQLBackend) -> dict[str, tuple[bool, str]]:
    """Every HNSW index on the memories table: name -> (valid, definition)."""
    table = backend.tables.memories
    with postgres_admin.connect() as conn:
        found = conn.execute(
            text(
                "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am a ON a.oid = c.relam "
                "WHERE i.indrelid = to_regclass(:t) AND a.amname = 'hnsw'"
            ),
            {"t": f'"{table.schema}"."{table.name}"'},
        ).all()
    return {str(name): (bool(valid), str(definition)) for name, valid, definition in found}


def name_of(backend: SQLBackend, scope: Scope) -> str:
    return index_name(backend.tables, scope.tenant_id, scope.user_id)


def opened(make_backend: Any, delay: float | None = None) -> SQLBackend:
    """A PostgreSQL store with the threshold of these tests; ``delay``: its
    ``ann_index_delay`` (``None``: the store's default)."""
    extra = {} if delay is None else {"ann_index_delay": delay}
    backend: SQLBackend = make_backend(
        "postgres", embedding_dimension=DIM, ann_threshold=THRESHOLD, **extra
    )
    return backend


def wait_for_hnsw(store: SQLBackend, user: Scope, failure: str) -> None:
    """Until the user's searches run on their own index (built in the background)."""
    deadline = time.monotonic() + 30
    while store.search_plan(user) != "hnsw":
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


@pytest.fixture
def store(make_backend: Any) -> SQLBackend:
    return opened(make_backend)


def test_a_user_past_the_threshold_gets_an_index_and_searches_stay_exact_or_better(
    store: SQLBackend, postgres_admin: Any, way: str
) -> None:
    big, small, twin = rows("b", 400, 1), rows("s", 60, 2), rows("b", 400, 3)
    write(store, way, SMALL, small)
    assert hnsw_indexes(postgres_admin, store) == {}  # no shared index, none for the small
    write(store, way, BIG, big)
    write(store, way, TWIN, twin)
    indexes = hnsw_indexes(postgres_admin, store)
    assert set(indexes) == {name_of(store, BIG), name_of(store, TWIN)}
    valid, definition = indexes[name_of(store, BIG)]
    assert valid and "tenant_a" in definition and "'big'" in definition
    assert store.search_plan(BIG) == store.search_plan(TWIN) == "hnsw"
    assert store.search_plan(SMALL) == "exact"
    rng = random.Random(9)
    for scope, data in ((BIG, big), (TWIN, twin), (SMALL, small)):
        recalls = []
        for _ in range(20):
            query = [x + rng.gauss(0, 0.6) for x in rng.choice(centers())]
            got = search(store, way, scope, query, 10)
            assert len(got) == 10 and set(got) <= set(data)
            recalls.append(len(set(got) & set(exact_top(query, data, 10))) / 10)
        assert sum(recalls) / len(recalls) >= 0.99, (scope, recalls)


def test_a_users_search_runs_on_their_own_index_and_no_one_elses(store: SQLBackend) -> None:
    """The planner matches a partial index's predicate only with the parameters' values in
    hand (psycopg's unnamed statements): EXPLAIN what the store sends, as it sends it."""
    write(store, "sync", BIG, rows("b", 300, 1))
    write(store, "sync", TWIN, rows("b", 300, 3))
    write(store, "sync", SMALL, rows("s", 30, 2))
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "<=>" in statement and "found" in statement:
            found = cursor.connection.execute("EXPLAIN " + statement, params).fetchall()
            plans.append("\n".join(r[0] for r in found))

    event.listen(store._engine, "after_cursor_execute", explain)
    query = centers()[0]
    for scope in (BIG, TWIN):
        assert len(store.search_memories(scope, query, 5)) == 5
        mine, other = name_of(store, scope), name_of(store, TWIN if scope == BIG else BIG)
        assert mine in plans[-1] and other not in plans[-1], plans[-1]
    # The small user forced down the index path: neither index can serve them.
    store._run(Call(SMALL, store.vectors._ann, (Search(SMALL, query, 5, []),)))
    assert "hnsw" not in plans[-1] and name_of(store, BIG) not in plans[-1], plans[-1]


def test_forgetting_a_user_or_tenant_drops_their_index(
    store: SQLBackend, postgres_admin: Any, way: str
) -> None:
    write(store, way, BIG, rows("b", 150, 1))
    write(store, way, TWIN, rows("b", 150, 3))
    write(store, way, ODD, rows("o", 150, 4))
    assert len(hnsw_indexes(postgres_admin, store)) == 3
    if way == "sync":
        store.forget_user(BIG)
    else:
        asyncio.run(store.aforget_user(BIG))
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, TWIN), name_of(store, ODD)}
    assert store.search_plan(BIG) == "exact" and store.search_memories(BIG, centers()[0], 3) == []
    if way == "sync":
        store.forget_tenant(ODD.tenant_id)
    else:
        asyncio.run(store.aforget_tenant(ODD.tenant_id))
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, TWIN)}
    write(store, way, BIG, rows("b", 150, 5))  # back past the threshold: a new index
    assert name_of(store, BIG) in hnsw_indexes(postgres_admin, store)
    assert store.search_plan(BIG) == "hnsw"


def test_odd_ids_are_literals_and_their_index_serves_them(
    store: SQLBackend, postgres_admin: Any
) -> None:
    data = rows("o", 200, 4)
    write(store, "sync", ODD, data)
    valid, definition = hnsw_indexes(postgres_admin, store)[name_of(store, ODD)]
    assert valid and "'t''en%ant\\'" in definition, definition
    assert store.search_plan(ODD) == "hnsw"
    query = centers()[1]
    assert search(store, "sync", ODD, query, 10) == exact_top(query, data, 10)


def test_an_invalid_index_is_not_used_and_the_next_write_rebuilds_it(
    store: SQLBackend, postgres_admin: Any
) -> None:
    """A concurrent build that failed leaves an index marked invalid: searches stay exact
    (and right) until the user's next write replaces it."""
    data = rows("b", 200, 1)
    write(store, "sync", BIG, data)
    name = name_of(store, BIG)
    with postgres_admin.begin() as conn:  # what a cancelled CREATE INDEX CONCURRENTLY leaves
        conn.execute(
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(:i)"),
            {"i": f'"{store.tables.memories.schema}"."{name}"'},
        )
    assert store.search_plan(BIG) == "exact"
    query = centers()[2]
    assert search(store, "sync", BIG, query, 10) == exact_top(query, data, 10)
    write(store, "sync", BIG, {"b9999": centers()[2]})
    assert hnsw_indexes(postgres_admin, store)[name][0] is True
    assert store.search_plan(BIG) == "hnsw"


def test_a_store_with_the_old_shared_index_keeps_using_it(
    store: SQLBackend, postgres_admin: Any
) -> None:
    """Stores made before per-user indexes hold one shared HNSW index: a large user without
    an index of their own is still searched on it, as before."""
    store.setup()
    with postgres_admin.begin() as conn:
        create_hnsw(conn, store.tables)
    again = SQLBackend(
        store._engine.url,
        admin_url=store._admin[0].url if store._admin else None,
        schema=store.tables.metadata.schema,
        embedding_dimension=DIM,
        ann_threshold=THRESHOLD,
    )
    try:
        again.setup()
        assert again.vectors.shared
        write(again, "sync", BIG, rows("b", 200, 1))
        with postgres_admin.begin() as conn:  # the user's own index not made yet
            conn.exec_driver_sql(
                f'DROP INDEX "{again.tables.memories.schema}"."{name_of(again, BIG)}"'
            )
        assert set(hnsw_indexes(postgres_admin, again)) == {"muxi_memories_hnsw"}
        assert again.search_plan(BIG) == "hnsw"
        query = centers()[3]
        assert len(search(again, "sync", BIG, query, 10)) == 10
    finally:
        again.close()


def test_a_deferred_build_waits_for_the_writes_to_pause(
    make_backend: Any, postgres_admin: Any, way: str
) -> None:
    """``ann_index_delay``: a bulk load puts no row into a live HNSW index; the index is
    built once the user's writes paused (or ``build_indexes`` runs it now), and searches
    are exact (and right) meanwhile."""
    store = opened(make_backend, delay=30)
    data = rows("b", 300, 1)
    write(store, way, BIG, data, build=False)
    assert hnsw_indexes(postgres_admin, store) == {}  # due in 30 s: none yet
    query = centers()[4]
    assert store.search_plan(BIG) == "exact"
    assert search(store, way, BIG, query, 10) == exact_top(query, data, 10)
    if way == "sync":
        assert store.build_indexes(timeout=60)
    else:
        assert asyncio.run(store.abuild_indexes(timeout=60))
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}
    assert store.search_plan(BIG) == "hnsw"
    assert len(search(store, way, BIG, query, 10)) == 10


def test_the_default_defers_the_build(make_backend: Any, postgres_admin: Any) -> None:
    store = opened(make_backend)
    write(store, "sync", BIG, rows("b", 200, 1), build=False)
    assert hnsw_indexes(postgres_admin, store) == {}  # due 2 s after the last write
    assert store.build_indexes(timeout=60)
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}


def test_with_no_delay_the_write_that_crossed_builds_the_index(
    make_backend: Any, postgres_admin: Any, way: str
) -> None:
    store = opened(make_backend, delay=0)
    write(store, way, BIG, rows("b", 200, 1), build=False)
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}
    assert store.build_indexes(timeout=0)  # nothing ever waits


def test_closing_the_store_runs_the_builds_still_waiting(
    make_backend: Any, postgres_admin: Any, way: str
) -> None:
    """A short process (an import) ends with its large users indexed."""
    store = opened(make_backend, delay=600)
    write(store, way, BIG, rows("b", 200, 1), build=False)
    assert hnsw_indexes(postgres_admin, store) == {}
    if way == "sync":
        store.close()
    else:
        asyncio.run(store.aclose())
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}


def test_a_large_users_search_asks_for_a_missing_index(
    make_backend: Any, postgres_admin: Any, way: str
) -> None:
    """An index gone (or never built: a process stopped first) is asked for by the user's
    next search, which is exact meanwhile; no write is needed."""
    store = opened(make_backend, delay=0.3)
    data = rows("b", 200, 1)
    write(store, way, BIG, data)
    with postgres_admin.begin() as conn:
        conn.exec_driver_sql(f'DROP INDEX "{store.tables.memories.schema}"."{name_of(store, BIG)}"')
    query = centers()[5]
    assert search(store, way, BIG, query, 10) == exact_top(query, data, 10)
    wait_for_hnsw(store, BIG, "the search did not ask for the index")
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}


class Builds:
    """A stand-in for the owner's build (the scheduler alone is under test): when each ran."""

    def __init__(self, succeed: bool = True) -> None:
        self.at: list[float] = []
        self.succeed = succeed

    def __call__(self, user: Scope) -> bool:
        self.at.append(time.monotonic())
        return self.succeed


def test_writes_push_a_build_back_no_further_than_the_cap() -> None:
    builds = Builds()
    deferred = Deferred(0.2, builds, cap=0.5)
    try:
        started = time.monotonic()
        while not builds.at and time.monotonic() - started < 10.0:  # writing without a pause
            deferred.want(BIG)
            time.sleep(0.02)
        assert builds.at  # built while the writes went on (each pushing it back 0.2 s)
    finally:
        deferred.close()


def test_a_search_asking_again_does_not_push_the_build_back() -> None:
    builds = Builds()
    deferred = Deferred(0.3, builds, cap=600)
    try:
        started = time.monotonic()
        deferred.want(BIG)
        while not builds.at and time.monotonic() - started < 10.0:
            deferred.want(BIG, push=False)
            time.sleep(0.02)
        assert builds.at  # built 0.3 s after the first ask, while the searches went on
    finally:
        deferred.close()


def test_a_deferred_build_runs_by_itself_after_the_pause(make_backend: Any) -> None:
    store = opened(make_backend, delay=0.3)
    write(store, "sync", BIG, rows("b", 200, 1), build=False)
    wait_for_hnsw(store, BIG, "the index was never built")


def test_a_user_forgotten_before_their_deferred_build_gets_no_index(
    make_backend: Any, postgres_admin: Any, way: str
) -> None:
    """No index may name a forgotten user: a waiting build is dropped with the user."""
    store = opened(make_backend, delay=600)
    write(store, way, BIG, rows("b", 200, 1), build=False)
    write(store, way, TWIN, rows("t", 200, 2), build=False)
    if way == "sync":
        store.forget_user(BIG)
        store.forget_tenant(TWIN.tenant_id)
    else:
        asyncio.run(store.aforget_user(BIG))
        asyncio.run(store.aforget_tenant(TWIN.tenant_id))
    store.close()  # runs every build still waiting
    assert hnsw_indexes(postgres_admin, store) == {}


def test_a_deferred_build_is_skipped_for_a_user_no_longer_large(
    make_backend: Any, postgres_admin: Any
) -> None:
    """The build counts the user's rows (under their scope) when it runs, not when asked."""
    store = opened(make_backend, delay=600)
    data = rows("b", 200, 1)
    write(store, "sync", BIG, data, build=False)
    store.delete_memories(BIG, ids=list(data)[:150])
    assert store.build_indexes(timeout=60)
    assert hnsw_indexes(postgres_admin, store) == {}
    write(store, "sync", BIG, rows("c", 100, 3))  # large again: built
    assert set(hnsw_indexes(postgres_admin, store)) == {name_of(store, BIG)}


def test_cancelling_drops_a_waiting_build_and_waits_out_a_running_one() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[Scope] = []

    def build(user: Scope) -> bool:
        if user == BIG:
            started.set()
            release.wait(10)
        done.append(user)
        return True

    deferred = Deferred(600, build)
    try:
        deferred.want(SMALL)
        deferred.cancel(SMALL.tenant_id, [SMALL.user_id])
        deferred.want(BIG)
        threading.Thread(target=deferred.settle).start()
        assert started.wait(10)
        timer = threading.Timer(0.5, release.set)
        timer.start()
        deferred.cancel(BIG.tenant_id, [BIG.user_id])  # returns once the running build ended
        assert done == [BIG]
        assert deferred.settle(timeout=10) and done == [BIG]  # SMALL's build was dropped
    finally:
        release.set()
        deferred.close()


def test_a_failing_build_does_not_end_the_builds_thread(caplog: Any) -> None:
    calls: list[Scope] = []

    def build(user: Scope) -> bool:
        calls.append(user)
        if len(calls) == 1:
            raise RuntimeError("the first build fails")
        return True

    deferred = Deferred(600, build)
    try:
        deferred.want(BIG)
        assert deferred.settle(timeout=10)
        deferred.want(SMALL)
        assert deferred.settle(timeout=10)
        assert calls == [BIG, SMALL]
        assert "deferred HNSW index build failed" in caplog.text
    finally:
        deferred.close()


def test_after_a_failed_build_searches_do_not_ask_again_but_a_write_does() -> None:
    """A build that cannot succeed (no owner's rights) is not retried, and logged, for
    every search of a large user: searches wait ``RETRY_AFTER``; a write asks at once."""
    builds = Builds(succeed=False)
    deferred = Deferred(600, builds)
    try:
        deferred.want(BIG)
        assert deferred.settle(timeout=10) and len(builds.at) == 1
        deferred.want(BIG, push=False)  # a search
        assert deferred.settle(timeout=10) and len(builds.at) == 1
        deferred.want(BIG)  # a write
        assert deferred.settle(timeout=10) and len(builds.at) == 2
        builds.succeed = True
        deferred.want(BIG)
        assert deferred.settle(timeout=10) and len(builds.at) == 3
        deferred.want(BIG, push=False)  # built: a search may ask again (the index went)
        assert deferred.settle(timeout=10) and len(builds.at) == 4
    finally:
        deferred.close()


def test_a_users_ef_search_follows_the_size_of_her_index(make_backend: Any) -> None:
    """``EF_PER_ROOT`` candidates per square root of the rows her index holds (the catalog's
    count, read with its validity), at least k, at most pgvector's 1,000; nothing known (no
    index: forgotten) is 400; a store's own ``ef_search`` is everyone's."""
    from muxi_isolation.stores.sql._vectors import EF_PER_ROOT

    store = opened(make_backend)
    write(store, "sync", BIG, rows("b", 400, 1))
    assert store.search_plan(BIG) == "hnsw"  # her plan read her index's state
    ef = math.ceil(EF_PER_ROOT * math.sqrt(400))
    assert store.vectors._ann_settings(BIG, 10)["hnsw.ef_search"] == str(ef) != "400"
    assert store.vectors._ann_settings(BIG, 500)["hnsw.ef_search"] == "500"
    assert store.vectors._ann_settings(SMALL, 10)["hnsw.ef_search"] == "400"
    capped = make_backend(
        "postgres", embedding_dimension=DIM, ann_threshold=THRESHOLD, ef_search=50
    )
    write(capped, "sync", BIG, rows("b", 400, 1))
    assert capped.search_plan(BIG) == "hnsw"
    assert capped.vectors._ann_settings(BIG, 10)["hnsw.ef_search"] == "50"
    store.forget_user(BIG)
    assert store.vectors._ann_settings(BIG, 10)["hnsw.ef_search"] == "400"
    store.vectors.index_rows(("tenant_a", "small"), -1.0)  # never counted (PostgreSQL: -1)
    assert store.vectors._ann_settings(SMALL, 10)["hnsw.ef_search"] == "400"
    for held, ef in ((17_900, "536"), (10**6, "1000")):  # above 400 where the size asks
        store.vectors.index_rows(("tenant_a", "small"), float(held))
        assert store.vectors._ann_settings(SMALL, 10)["hnsw.ef_search"] == ef
