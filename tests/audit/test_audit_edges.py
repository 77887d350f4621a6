"""The audit trail at the edges (issue 17): the HTTP server's refusals (401, 403, a body
naming a user), its admin acts and impersonation, each with the key's id as actor;
``GET /v1/admin/audit``; the CLI's ``audit`` and ``audit verify`` (exit 1 once an event is
edited or deleted as the owner); the adapters name themselves as the interface; on
PostgreSQL the app role can append but not read, change or delete an event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from muxi_isolation import Backend, Isolation, KeyRing, MissingScope, ReservedKey, Scope
from muxi_isolation.audit import DENIED, MISSING, OK, Auditor, AuditQuery, read_events
from muxi_isolation.cli import main
from muxi_isolation.keys import hash_key
from muxi_isolation.server import create_app

KEY_A = "fmc_tenant_a_key"
ADMIN = "fma_admin_key"
ALICE = Scope("tenant_a", "alice")


def key_id(key: str) -> str:
    return f"sha256:{hash_key(key)[:12]}"


def http(backend: Backend, *, impersonate: bool = False) -> httpx.AsyncClient:
    keys = KeyRing()
    keys.add_client_key("tenant_a", KEY_A)
    keys.add_admin_key(ADMIN, impersonate=impersonate)
    app = create_app(Isolation(backend), keys)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def headers(user: str, key: str = KEY_A) -> dict[str, str]:
    return {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": user}


def trail(backend: Backend) -> list[tuple[Any, ...]]:
    return [
        (e.actor, e.interface, e.operation, e.outcome, e.tenant_id, e.user_id)
        for e in read_events(backend)
    ]


async def test_http_refusals_are_events_with_the_keys_id(backend: Backend) -> None:
    backend.audit = Auditor.database(backend)
    async with http(backend) as client:
        assert (
            await client.get("/v1/sessions", headers=headers("tenant_a:alice", "fmc_bad"))
        ).status_code == 401
        assert (
            await client.get("/v1/sessions", headers=headers("tenant_b:eve"))
        ).status_code == 403
        assert (
            await client.get("/v1/admin/audit", headers=headers("tenant_a:alice"))
        ).status_code == 403
        body = {"message": "hi", "user_id": "tenant_a:bob"}  # a body naming a user
        assert (
            await client.post("/v1/chat", headers=headers("tenant_a:alice"), json=body)
        ).status_code == 400
        assert (
            await client.get("/v1/sessions/sess_nope", headers=headers("tenant_a:alice"))
        ).status_code == 404
        assert (
            await client.get("/v1/sessions", headers=headers("tenant_a:alice"))
        ).status_code == 200
    mine = key_id(KEY_A)
    assert trail(backend) == [
        ("unknown key", "http", "GET /v1/sessions", DENIED, "tenant_a", "alice"),
        (mine, "http", "GET /v1/sessions", DENIED, "tenant_b", "eve"),
        (mine, "http", "GET /v1/admin/audit", DENIED, "tenant_a", "alice"),
        (mine, "http", "POST /v1/chat", DENIED, "tenant_a", "alice"),
        (mine, "http", "read_turn", MISSING, "tenant_a", "alice"),  # the session and history
    ]


async def test_http_admin_acts_and_the_audit_route(backend: Backend) -> None:
    backend.audit = Auditor.database(backend)
    admin = {"X-Muxi-Client-Key": ADMIN}
    async with http(backend, impersonate=True) as client:
        assert (
            await client.get("/v1/admin/users/tenant_a%3Aalice/export", headers=admin)
        ).status_code == 200
        assert (
            await client.delete("/v1/admin/users/tenant_a%3Aalice", headers=admin)
        ).status_code == 200
        assert (
            await client.get("/v1/sessions", headers=headers("tenant_a:bob", ADMIN))
        ).status_code == 200
        found = await client.get(
            "/v1/admin/audit", headers=admin, params={"user": "tenant_a:alice"}
        )
        assert found.status_code == 200
        events = found.json()["events"]
        assert [(e["operation"], e["actor"]) for e in events] == [
            ("export", key_id(ADMIN)),
            ("forget_user", key_id(ADMIN)),
        ]
        denied = await client.get("/v1/admin/audit", headers=admin, params={"outcome": "denied"})
        assert denied.json() == {"events": []}
        bad = await client.get("/v1/admin/audit", headers=admin, params={"since": "yesterday"})
        assert bad.status_code == 422
    assert [e[2:4] for e in trail(backend)][2:] == [
        ("impersonate", OK),
        ("audit_read", OK),
        ("audit_read", OK),
    ]
    assert read_events(backend, AuditQuery(user_id="bob"))[0].targets == ("/v1/sessions",)


def test_the_audit_route_is_in_the_openapi_document() -> None:
    from muxi_isolation.server import openapi_document

    route = openapi_document()["paths"]["/v1/admin/audit"]["get"]
    assert {p["name"] for p in route["parameters"]} == {
        "tenant",
        "user",
        "since",
        "outcome",
        "limit",
    }


# -- the CLI ----------------------------------------------------------------------------------


def config_file(tmp_path: Path, url: str, admin: str | None = None) -> Path:
    persistent: dict[str, Any] = {"provider": "postgresql" if admin else "sqlite"}
    persistent["connection_string"] = url
    if admin:
        persistent["admin_connection_string"] = admin
    path = tmp_path / "muxi.yaml"
    path.write_text(json.dumps({"memory": {"persistent": persistent}}))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_lists_and_verifies_and_a_tampered_event_fails_verify(
    kind: str, tmp_path: Path, make_backend: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = make_backend(kind)
    backend.setup()
    if kind == "sqlite":
        path = config_file(tmp_path, str(backend._target.sync_url))
    else:
        admin = backend._admin[0].url.render_as_string(hide_password=False)
        app = backend._engine.url.render_as_string(hide_password=False)
        schema = backend.tables.metadata.schema
        in_schema = f"options=-csearch_path%3D{schema}%2Cpublic"
        app, admin = (f"{u}{'&' if '?' in u else '?'}{in_schema}" for u in (app, admin))
        path = config_file(tmp_path, app, admin)
    for user in ("tenant_a:alice", "tenant_a:bob", "tenant_a:carol"):
        assert cli(capsys, "forget-user", user, "--yes", "--config", str(path))[0] == 0
    status, out = cli(capsys, "audit", "--config", str(path), "--user", "tenant_a:bob")
    assert status == 0 and " tenant_a:bob app cli forget_user ok" in out and "alice" not in out
    status, out = cli(capsys, "audit", "--config", str(path), "--json", "--outcome", "denied")
    assert status == 0 and json.loads(out) == []
    assert cli(capsys, "audit", "verify", "--config", str(path)) == (0, "ok: 1 chain verified\n")

    table = f'"{backend.tables.metadata.schema}".muxi_audit_events'
    with backend._as_owner() as conn:  # the tables' owner edits an event
        conn.execute(text(f"UPDATE {table} SET user_id = 'mallory' WHERE seq = 2"))
    status, out = cli(capsys, "audit", "verify", "--config", str(path))
    assert status == 1 and "BROKEN tenant_a #2: the event was changed" in out
    with backend._as_owner() as conn:  # ... or puts it back and deletes it
        conn.execute(text(f"UPDATE {table} SET user_id = 'bob' WHERE seq = 2"))
    assert cli(capsys, "audit", "verify", "--config", str(path))[0] == 0
    with backend._as_owner() as conn:
        conn.execute(text(f"DELETE FROM {table} WHERE seq = 2"))
    status, out = cli(capsys, "audit", "verify", "--config", str(path), "--json")
    assert status == 1 and json.loads(out)["breaks"] == [
        {"tenant_id": "tenant_a", "seq": 3, "reason": "events 2 to 2 are missing"}
    ]


# -- PostgreSQL: append-only for the app role ---------------------------------------------------


def test_the_app_role_can_append_but_not_read_change_or_delete(
    make_backend: Any, postgres_urls: Any
) -> None:
    backend = make_backend("postgres")
    backend.audit = Auditor.database(backend)
    backend.get_session(ALICE, "nope")  # appended through the function, as the app role
    assert len(read_events(backend)) == 1
    table = f'"{backend.tables.metadata.schema}".muxi_audit_events'
    app: URL = postgres_urls.app
    engine = create_engine(app, poolclass=NullPool)
    try:
        for statement in (
            f"SELECT * FROM {table}",
            f"UPDATE {table} SET outcome = 'ok'",
            f"DELETE FROM {table}",
            f"INSERT INTO {table} SELECT * FROM {table}",
            f"TRUNCATE {table}",
        ):
            denied = pytest.raises(ProgrammingError, match="permission denied")
            with denied, engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    assert len(read_events(backend)) == 1


# -- the adapters name themselves ---------------------------------------------------------------


def test_adapters_are_the_interface_of_their_events(backend: Backend) -> None:
    """Through every framework: a foreign id answered as missing in storage, and the
    refusals an adapter makes itself before any storage call."""
    from llama_index.core.llms import ChatMessage

    from muxi_isolation import Memory
    from muxi_isolation.adapters.langchain import HashingEmbeddings, MuxiVectorStore
    from muxi_isolation.adapters.langgraph import MuxiCheckpointer, MuxiStore
    from muxi_isolation.adapters.llamaindex import MuxiChatStore

    backend.audit = Auditor.database(backend)
    backend.upsert_memories(Scope("tenant_a", "bob"), [Memory("b1", "x")])
    lc = MuxiVectorStore(backend, HashingEmbeddings(8), scope=ALICE)
    assert lc.get_by_ids(["b1"]) == []
    with pytest.raises(ReservedKey):
        lc.add_texts(["x"], metadatas=[{"muxi_tenant_id": "tenant_b"}])
    hostile = ChatMessage(role="user", content="x", additional_kwargs={"muxi_user_id": "bob"})
    with pytest.raises(ReservedKey):
        MuxiChatStore(backend, scope=ALICE).add_message("k", hostile)
    with pytest.raises(MissingScope):
        MuxiStore(backend).get(("ns",), "k")  # no user anywhere: refused by the adapter
    with pytest.raises(MissingScope):
        asyncio.run(MuxiCheckpointer(backend).aget_tuple({"configurable": {"thread_id": "t"}}))
    assert [(e.interface, e.operation, e.outcome) for e in read_events(backend)] == [
        ("langchain", "get_memories", MISSING),
        ("langchain", "MuxiVectorStore.add_texts", DENIED),
        ("llamaindex", "MuxiChatStore.add_message", DENIED),
        ("langgraph", "MuxiStore.batch", DENIED),
        ("langgraph", "MuxiCheckpointer.aget_tuple", DENIED),
    ]
