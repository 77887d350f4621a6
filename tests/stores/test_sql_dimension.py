"""The embedding dimension: the first vector fixes it (``"auto"``), it is recorded, and a
vector or a configuration that disagrees says what is stored, what was sent, and the
command that changes it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from muxi_isolation import ConfigError, InvalidInput, Memory, Scope, cli
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope("tenant_a", "alice")
BOB = Scope("tenant_b", "bob")
KINDS = ["sqlite", "postgres"]


def mem(id: str, size: int) -> Memory:
    return Memory(id, f"text {id}", {}, [1.0] + [0.0] * (size - 1))


def reopen(backend: SQLBackend, **options: Any) -> SQLBackend:
    """Another backend on the same database (a restart, or another process)."""
    if backend.dialect == "sqlite":
        url = backend._target.sync_url
        return SQLBackend(url, **options)
    return SQLBackend(
        backend._engine.url,
        admin_url=backend._admin[0].url if backend._admin else None,
        schema=backend.tables.metadata.schema,
        **options,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_vector_fixes_the_dimension(make_backend: Any, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension="auto")
    assert backend.embedding_dimension() is None
    backend.upsert_memories(ALICE, [mem("a", 3)])
    assert backend.embedding_dimension() == 3
    with pytest.raises(InvalidInput) as refused:
        backend.upsert_memories(BOB, [mem("b", 4)])
    message = str(refused.value)
    assert "holds 3-dimension" in message and "has 4" in message
    assert "muxi-isolation embedding-dimension 4 --clear" in message
    with pytest.raises(InvalidInput, match="this query has 4"):
        backend.search_memories(ALICE, [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(InvalidInput, match="holds 3-dimension"):
        asyncio.run(backend.aupsert_memories(BOB, [mem("b", 4)]))
    assert [m.id for m, _ in backend.search_memories(ALICE, [1.0, 0.0, 0.0])] == ["a"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_first_async_vector_fixes_it_too(make_backend: Any, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension="auto")
    await backend.aupsert_memories(ALICE, [mem("a", 5)])
    assert backend.tables.dimension == 5
    with pytest.raises(InvalidInput, match="holds 5-dimension"):
        await backend.aupsert_memories(ALICE, [mem("b", 6)])


def test_postgres_records_it_in_the_column_and_makes_no_shared_index(
    make_backend: Any, postgres_admin: Any
) -> None:
    backend = make_backend("postgres", embedding_dimension="auto")
    backend.upsert_memories(ALICE, [mem("a", 8)])
    schema = backend.tables.metadata.schema
    with postgres_admin.connect() as conn:
        kind = conn.scalar(
            text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attname = 'embedding'"
            ),
            {"t": f'"{schema}".muxi_memories'},
        )
        index = conn.scalar(
            text("SELECT to_regclass(:i)::text"), {"i": f'"{schema}".muxi_memories_hnsw'}
        )
    assert kind == "vector(8)"
    assert index is None  # no shared HNSW index: large users get their own (_ann_index)
    assert backend.search_plan(ALICE) == "exact"  # small users still scan exactly


@pytest.mark.parametrize("kind", KINDS)
def test_a_restart_keeps_it_and_a_disagreeing_config_says_how_to_change_it(
    make_backend: Any, kind: str
) -> None:
    first = make_backend(kind, embedding_dimension="auto")
    first.upsert_memories(ALICE, [mem("a", 3)])
    again = reopen(first)  # "auto" by default
    try:
        assert again.embedding_dimension() == 3
        with pytest.raises(InvalidInput, match="holds 3-dimension"):
            again.upsert_memories(ALICE, [mem("b", 7)])
    finally:
        again.close()
    other = reopen(first, embedding_dimension=7)
    try:
        with pytest.raises(ConfigError) as refused:
            other.setup()
        assert "holds 3-dimension" in str(refused.value)
        assert "embedding-dimension 7 --clear" in str(refused.value)
    finally:
        other.close()


@pytest.mark.parametrize("kind", KINDS)
def test_changing_it_needs_the_vectors_dropped(make_backend: Any, kind: str) -> None:
    backend = make_backend(kind, embedding_dimension="auto")
    backend.upsert_memories(ALICE, [mem("a", 3)])
    backend.upsert_memories(BOB, [mem("b", 3)])
    with pytest.raises(ConfigError, match="2 stored vector"):
        backend.set_embedding_dimension(5)
    assert backend.embedding_dimension() == 3
    assert backend.set_embedding_dimension(5, clear=True) == 2
    assert [(m.id, m.embedding) for m in backend.list_memories(ALICE)] == [("a", None)]
    backend.upsert_memories(ALICE, [mem("a", 5)])  # embedded again
    assert [m.id for m, _ in backend.search_memories(ALICE, [1.0, 0, 0, 0, 0])] == ["a"]
    assert backend.search_memories(BOB, [1.0, 0, 0, 0, 0]) == []  # Bob's vector is gone
    assert [m.content for m in backend.list_memories(BOB)] == ["text b"]  # his text is not


def test_a_configured_dimension_is_recorded_at_setup(make_backend: Any) -> None:
    backend = make_backend("sqlite", embedding_dimension=4)
    backend.setup()
    again = reopen(backend)
    try:
        assert again.embedding_dimension() == 4
    finally:
        again.close()


def test_the_cli_shows_and_changes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'dim.db'}"
    config = tmp_path / "muxi.yaml"
    config.write_text(f"memory:\n  persistent:\n    connection_string: {url}\n")
    assert cli.main(["embedding-dimension", "--config", str(config)]) == 0
    assert "not fixed yet" in capsys.readouterr().out
    backend = SQLBackend(url)
    backend.upsert_memories(ALICE, [mem("a", 3)])
    backend.close()
    assert cli.main(["embedding-dimension", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert cli.main(["embedding-dimension", "6", "--config", str(config)]) == 2
    assert "--clear" in capsys.readouterr().err
    assert cli.main(["embedding-dimension", "6", "--clear", "--config", str(config)]) == 0
    assert (
        capsys.readouterr().out.strip() == "embedding dimension is now 6; 1 stored vector dropped"
    )


def test_the_readme_embedding_works_on_the_default_config(tmp_path: Path) -> None:
    """The default configuration takes any embedding size (it used to be VECTOR(1536))."""
    from muxi_isolation import Isolation
    from muxi_isolation.hashing import hashing_vector

    isolation = Isolation.from_config(
        {"memory": {"persistent": {"connection_string": f"sqlite:///{tmp_path / 'r.db'}"}}},
        embed=lambda text: hashing_vector(text, 256),
    )
    try:
        memories = isolation.memories(user_id="tenant_a:alice")
        memories.add("I like Python")
        assert [m.content for m, _ in memories.search("Python", k=1)] == ["I like Python"]
    finally:
        isolation.backend.close()
