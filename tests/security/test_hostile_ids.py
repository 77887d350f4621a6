"""Hostile identifiers: every id in ``hostile_ids.json`` is either refused with
``InvalidIdentifier`` or stored and isolated exactly; never a leak, never a crash.

All accepted ids live side by side in one store, as users of one tenant (then as tenants,
then as session ids of one user, then as memory ids), so each is checked against every
other, near-identical ones included (``a%`` and ``a_``, ``A`` and ``a``, Cyrillic and Latin
``a``). Ids that are equal after NFC (``café`` composed and decomposed, KELVIN SIGN and
``K``) are one identity: each of them reads what any of them wrote. The grouping and the
accept/refuse expectations come from the documented canonical form, implemented here
independently of ``scope.py``.
"""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from muxi_isolation import (
    Backend,
    Isolation,
    IsolationError,
    KeyRing,
    Memory,
    Message,
    Scope,
    SessionManager,
)
from muxi_isolation.errors import InvalidIdentifier
from muxi_isolation.server import create_app

DATA = json.loads((Path(__file__).parent / "hostile_ids.json").read_text())
CASES: list[dict[str, str]] = DATA["ids"]
IDS = [c["id"] for c in CASES]
TENANT = "t_hostile"
HTTP_TENANT = "t_http"
CLIENT_KEY = "fmc_hostile_tenant"
ADMIN_KEY = "fma_hostile_admin"
IMPERSONATING_KEY = "fma_hostile_impersonator"


def documented_ok(value: str) -> bool:
    """The canonical form of scope.py's docstring: NFC, 1..255, no Cc/Cs/separators, no
    surrounding whitespace."""
    text = unicodedata.normalize("NFC", value)
    return bool(
        text
        and len(text) <= 255
        and not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)
        and "\u2028" not in text
        and "\u2029" not in text
        and text == text.strip()
    )


def identity(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def test_the_table_is_large_and_covers_every_kind_of_attack() -> None:
    assert len(CASES) >= 200
    assert len(set(IDS)) == len(IDS)
    kinds = {c["why"].split(":")[0] for c in CASES}
    for kind in (
        "sql",
        "separator",
        "nfc",
        "nfkc-only",
        "confusable",
        "case",
        "control",
        "format",
        "surrogate",
        "length",
        "empty",
        "whitespace",
        "operator/template",
        "path",
        "wildcard",
    ):
        assert kind in kinds, kind
    accepted = [c for c in CASES if c["as_user"] == "accept"]
    assert 100 < len(accepted) < len(CASES)
    twins = defaultdict(set)
    for value in IDS:
        twins[identity(value)].add(value)
    assert sum(1 for group in twins.values() if len(group) > 1) >= 8  # real NFC twins


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["why"])
def test_the_canonical_form_refuses_exactly_what_it_documents(case: dict[str, str]) -> None:
    value = case["id"]
    assert documented_ok(value) == (case["as_user"] == "accept")
    if case["as_user"] == "reject":
        with pytest.raises(InvalidIdentifier):
            Scope(TENANT, value)
        with pytest.raises(InvalidIdentifier):
            Scope(value, "u")
        with pytest.raises(InvalidIdentifier):
            Scope(TENANT, "u", value)
        return
    assert Scope(TENANT, value).user_id == identity(value)
    assert Scope(TENANT, "u", value).session_id == identity(value)
    if ":" in value:
        with pytest.raises(InvalidIdentifier):
            Scope(value, "u")
    else:
        assert Scope(value, "u").tenant_id == identity(value)
    assert Scope.parse(Scope(TENANT, value).header) == Scope(TENANT, value)


def accepted_groups(make: Callable[[str], Scope]) -> dict[str, list[int]]:
    """Case indexes by identity, for the cases ``make`` accepts (refusals are checked)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(IDS):
        try:
            make(value)
        except InvalidIdentifier:
            continue
        groups[identity(value)].append(i)
    return groups


def test_hostile_user_ids_are_isolated_exactly(backend: Backend) -> None:
    sessions = SessionManager(backend)
    groups = accepted_groups(lambda v: Scope(TENANT, v))
    for members in groups.values():
        for i in members:
            scope = Scope(TENANT, IDS[i])
            sessions.ensure(scope, "s")  # every user has a session called "s"
            backend.append_messages(scope.with_session("s"), [Message("user", f"msg {i}")])
            memories = [Memory("shared", f"shared {i}", {"i": i}), Memory(f"own{i}", f"own {i}")]
            backend.upsert_memories(scope, memories)
    every_memory_id = ["shared", *(f"own{i}" for i in range(len(IDS)))]
    for members in groups.values():
        expected_own = {f"own{i}": f"own {i}" for i in members}
        for i in members:  # every spelling of the identity reads the same
            scope = Scope(TENANT, IDS[i])
            assert [s.id for s in backend.list_sessions(scope)] == ["s"], IDS[i]
            got = [m.content for m in backend.get_messages(scope.with_session("s"))]
            assert got == [f"msg {j}" for j in members], IDS[i]
            mine = {m.id: m.content for m in backend.list_memories(scope)}
            assert mine == {**expected_own, "shared": f"shared {members[-1]}"}, IDS[i]
            fetched = {m.id for m in backend.get_memories(scope, every_memory_id)}
            assert fetched == set(mine), IDS[i]
            assert backend.count_memories(scope, filter={"i": {"$exists": True}}) == 1


def test_hostile_tenant_ids_are_isolated_exactly(backend: Backend) -> None:
    groups = accepted_groups(lambda v: Scope(v, "u"))
    assert not any(":" in IDS[i] for members in groups.values() for i in members)
    for members in groups.values():
        for i in members:
            backend.upsert_memories(Scope(IDS[i], "u"), [Memory(f"own{i}", f"own {i}")])
    for members in groups.values():
        for i in members:
            seen = {m.id for m in backend.list_memories(Scope(IDS[i], "u"))}
            assert seen == {f"own{j}" for j in members}, IDS[i]


def test_hostile_session_ids_are_isolated_exactly(backend: Backend) -> None:
    user = Scope(TENANT, "owner")
    other = Scope(TENANT, "other")
    sessions = SessionManager(backend)
    groups = accepted_groups(lambda v: Scope(TENANT, "u", v))
    for members in groups.values():
        for i in members:
            sessions.ensure(user, IDS[i])
            backend.append_messages(user.with_session(IDS[i]), [Message("user", f"msg {i}")])
    listed = {s.id for s in backend.list_sessions(user)}
    assert listed == set(groups)
    for members in groups.values():
        for i in members:
            got = [m.content for m in backend.get_messages(user.with_session(IDS[i]))]
            assert got == [f"msg {j}" for j in members], IDS[i]
            assert backend.get_session(other, IDS[i]) is None  # another user: no such session
            assert backend.get_messages(other.with_session(IDS[i])) == []
    assert backend.list_sessions(other) == []


def test_hostile_memory_ids_never_crash_or_leak(backend: Backend) -> None:
    """Memory ids are exact strings (no canonical form): each one is its own record, or a
    typed/ValueError refusal where the database cannot hold it (NUL on PostgreSQL)."""
    alice, bob = Scope(TENANT, "alice"), Scope(TENANT, "bob")
    stored: dict[str, str] = {}
    for i, value in enumerate(IDS):
        try:
            backend.upsert_memories(alice, [Memory(value, f"alice {i}", {}, [1.0, float(i)])])
        except (IsolationError, ValueError):
            continue
        stored[value] = f"alice {i}"
    unstorable = {v for v in IDS if "\x00" in v or any(unicodedata.category(c) == "Cs" for c in v)}
    assert set(IDS) - set(stored) <= unstorable
    backend.upsert_memories(bob, [Memory(v, "bob's", {}, [1.0, 0.0]) for v in stored])
    assert {m.id: m.content for m in backend.list_memories(alice)} == stored
    assert {m.id: m.content for m in backend.get_memories(alice, list(stored))} == stored
    hits = backend.search_memories(alice, [1.0, 0.5], k=len(IDS))
    assert {m.id for m, _ in hits} == set(stored)
    assert backend.delete_memories(bob, ids=list(stored)) == len(stored)
    assert {m.id: m.content for m in backend.list_memories(alice)} == stored


# -- through the HTTP header ---------------------------------------------------------------


def header_bytes(value: str) -> bytes:
    # surrogatepass: a lone surrogate goes out as the (invalid UTF-8) bytes a client would send
    return value.encode("utf-8", "surrogatepass")


def expected_parse(header: str) -> tuple[str, str] | None:
    """The (tenant, user identity) a header names, per the documented rules, or None."""
    tenant, sep, user = header.partition(":")
    if not sep:
        tenant, user = "default", header
    if not (documented_ok(tenant) and documented_ok(user)):
        return None
    return identity(tenant), identity(user)


@pytest.fixture
def http_app(make_backend: Callable[..., Backend]) -> Any:
    keys = KeyRing()
    keys.add_client_key(HTTP_TENANT, CLIENT_KEY)
    keys.add_admin_key(ADMIN_KEY)
    keys.add_admin_key(IMPERSONATING_KEY, impersonate=True)
    return create_app(Isolation(make_backend("sqlite")), keys)


async def test_hostile_user_id_headers(http_app: Any) -> None:
    """As ``t_http:<id>`` with that tenant's client key: 400 or isolated exactly."""
    transport = httpx.ASGITransport(app=http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://muxi") as http:
        made: dict[str, set[str]] = defaultdict(set)
        for i, value in enumerate(IDS):
            headers = {
                "X-Muxi-Client-Key": CLIENT_KEY,
                "X-Muxi-User-Id": header_bytes(f"{HTTP_TENANT}:{value}"),
            }
            reply = await http.post("/v1/chat", headers=headers, json={"message": f"hi {i}"})
            if expected_parse(f"{HTTP_TENANT}:{value}") is None:
                assert reply.status_code == 400, (value, reply.text)
                assert reply.json()["error"] == "invalid_user_id"
                continue
            assert reply.status_code == 200, (value, reply.text)
            made[identity(value)].add(reply.json()["session_id"])
        for value in IDS:
            if identity(value) not in made:
                continue
            headers = {
                "X-Muxi-Client-Key": CLIENT_KEY,
                "X-Muxi-User-Id": header_bytes(f"{HTTP_TENANT}:{value}"),
            }
            listed = (await http.get("/v1/sessions", headers=headers)).json()["sessions"]
            assert {s["id"] for s in listed} == made[identity(value)], value
            assert {s["user_id"] for s in listed} == {f"{HTTP_TENANT}:{identity(value)}"}
        foreign = next(iter(made[identity("alice")]))
        for value in ("Alice", "\u0430lice", "alice\u200b", "%", "_"):
            headers = {
                "X-Muxi-Client-Key": CLIENT_KEY,
                "X-Muxi-User-Id": header_bytes(f"{HTTP_TENANT}:{value}"),
            }
            reply = await http.get(f"/v1/sessions/{foreign}", headers=headers)
            assert reply.status_code == 404, value


async def test_hostile_whole_headers_with_admin_and_client_keys(http_app: Any) -> None:
    """The id as the whole header: an impersonating admin key gets 400 or the parsed user;
    a plain admin key gets 400 or 403 (it acts as no user); the client key of ``t_http``
    gets 403 for any other tenant, and never 2xx there."""
    transport = httpx.ASGITransport(app=http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://muxi") as http:
        for value in IDS:
            parsed = expected_parse(value)
            for key in (ADMIN_KEY, IMPERSONATING_KEY, CLIENT_KEY):
                headers = {"X-Muxi-Client-Key": key, "X-Muxi-User-Id": header_bytes(value)}
                reply = await http.post("/v1/sessions", headers=headers)
                if parsed is None:
                    assert reply.status_code == 400, (value, key, reply.text)
                elif key == ADMIN_KEY or (key == CLIENT_KEY and parsed[0] != HTTP_TENANT):
                    assert reply.status_code == 403, (value, key, reply.text)
                else:
                    assert reply.status_code == 201, (value, key, reply.text)
                    body = reply.json()
                    assert Scope.parse(body["user_id"]) == Scope(*parsed), value


@pytest.mark.parametrize("case", DATA["header_bytes"], ids=lambda c: c["why"])
async def test_header_bytes_that_are_not_utf8_are_refused(
    http_app: Any, case: dict[str, str]
) -> None:
    transport = httpx.ASGITransport(app=http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://muxi") as http:
        raw = bytes.fromhex(case["hex"])
        for value in (raw, HTTP_TENANT.encode() + b":" + raw):
            headers = {"X-Muxi-Client-Key": CLIENT_KEY, "X-Muxi-User-Id": value}
            reply = await http.post("/v1/sessions", headers=headers)
            assert reply.status_code == 400, value
            assert reply.json()["error"] == "invalid_user_id"


def every_byte_escaped(value: str) -> str:
    return "".join(f"%{b:02X}" for b in value.encode("utf-8", "surrogatepass"))


async def test_hostile_session_ids_in_paths_and_bodies(
    make_backend: Callable[..., Backend],
) -> None:
    """Sessions an app created under hostile ids: their owner reaches each one by URL path
    and chat body; another user of the tenant gets 404 for every one of them."""
    isolation = Isolation(make_backend("sqlite"))
    keys = KeyRing()
    keys.add_client_key(HTTP_TENANT, CLIENT_KEY)
    owner = Scope(HTTP_TENANT, "victim")
    for value in IDS:
        if documented_ok(value):
            isolation.sessions.ensure(owner, value)
    transport = httpx.ASGITransport(app=create_app(isolation, keys))
    victim = {"X-Muxi-Client-Key": CLIENT_KEY, "X-Muxi-User-Id": f"{HTTP_TENANT}:victim"}
    intruder = {"X-Muxi-Client-Key": CLIENT_KEY, "X-Muxi-User-Id": f"{HTTP_TENANT}:Victim"}
    async with httpx.AsyncClient(transport=transport, base_url="http://muxi") as http:
        for value in IDS:
            path = f"/v1/sessions/{every_byte_escaped(value)}"
            body = json.dumps({"message": "hello", "session_id": value})  # ASCII: \\u escapes
            if not documented_ok(value):
                for headers in (victim, intruder):
                    # refused, or (a newline misses the route; invalid UTF-8 in a path is
                    # decoded with U+FFFD) not found: never anything of anyone's
                    got = await http.get(path, headers=headers)
                    assert (got.status_code, got.json()["error"]) in (
                        (400, "invalid_identifier"),
                        (404, "not_found"),
                        (404, "session_not_found"),
                    ), value
                    chat = await http.post("/v1/chat", headers=headers, content=body)
                    assert chat.status_code == 400, value
                continue
            mine = await http.get(path, headers=victim)
            assert mine.status_code == 200, (value, mine.text)
            assert mine.json()["id"] == identity(value)
            assert (await http.post("/v1/chat", headers=victim, content=body)).status_code == 200
            assert (await http.get(path, headers=intruder)).status_code == 404, value
            chat = await http.post("/v1/chat", headers=intruder, content=body)
            assert chat.status_code == 404, value
        listed = (await http.get("/v1/sessions", headers=intruder)).json()["sessions"]
        assert listed == []
