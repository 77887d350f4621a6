"""``muxi-isolation demo``: the seed's scenario, played over real HTTP.

Starts the reference server with uvicorn on loopback (a free port) over the embedded
default storage (a SQLite file in a temporary directory), then, printing each request as a
curl line and each answer:

    User A: "Remember I like Python"
    User B: "What language do I like?"  ->  "I don't know your preference yet."
    User A, new session: "What language do I like?"  ->  "You like Python."

and the same for ``tenant_a:user_1`` and ``tenant_b:user_1`` (same user id, other tenant),
plus the refusals: another user's session is not found, a tenant's key cannot act for
another tenant. The exit status is 0 only if every isolation check held.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import AdapterUnavailable, Forbidden, SessionNotFound

try:
    import httpx
except ImportError as exc:  # the demo is a server and a client: both need the extra
    raise AdapterUnavailable("httpx", "server") from exc

from .agent import UNKNOWN_PREFERENCE
from .client import Formation
from .facade import Isolation
from .keys import KeyRing
from .server import create_app, serve_in_thread
from .stores import open_backend

__all__ = ["run_demo"]

Out = Callable[[str], None]
_WIDTH = 240


@contextmanager
def _storage(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="muxi_demo_") as tmp:
        yield f"sqlite:///{Path(tmp) / 'muxi_demo.db'}"


def _curl(request: httpx.Request, names: dict[str, str]) -> str:
    parts = ["curl"]
    if request.method != "GET":
        parts.append(f"-X {request.method}")
    parts.append(str(request.url))
    for header in ("X-Muxi-Client-Key", "X-Muxi-User-Id"):
        value = request.headers.get(header)
        if value is not None:
            parts.append(f'-H "{header}: {names.get(value, value)}"')
    if request.content:
        parts.append(f"-d '{request.content.decode()}'")
    return "$ " + " ".join(parts)


class _Checks:
    def __init__(self, out: Out) -> None:
        self.out, self.passed, self.failed = out, 0, 0

    def check(self, ok: bool, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        self.out(f"   [{'ok' if ok else 'FAIL'}] {what}")


def run_demo(url: str | None = None, out: Out = print) -> int:
    """Play the scenario; 0 if every check held, 1 otherwise."""
    keys = KeyRing()
    names = {
        keys.add_client_key("default"): "$KEY",
        keys.add_client_key("tenant_a"): "$KEY_A",
        keys.add_client_key("tenant_b"): "$KEY_B",
        keys.add_admin_key(): "$ADMIN_KEY",
    }
    key = {name: value for value, name in names.items()}
    with _storage(url) as storage:
        isolation = Isolation(open_backend(storage))
        try:
            with serve_in_thread(create_app(isolation, keys)) as base:
                out("muxi-isolation demo: the seed's scenario over HTTP")
                out(f"storage: {storage}")
                out(f"server:  {base}")
                for value, name in names.items():
                    out(f"{name[1:]}={value}")
                return _play(base, key, names, out)
        finally:
            isolation.close()


def _play(base: str, key: dict[str, str], names: dict[str, str], out: Out) -> int:
    checks = _Checks(out)
    with httpx.Client(event_hooks=_shown(names, out), timeout=30) as http:
        main = Formation(base, key["$KEY"], http=http)
        tenant_a = Formation(base, key["$KEY_A"], http=http)
        tenant_b = Formation(base, key["$KEY_B"], http=http)
        admin = Formation(base, key["$ADMIN_KEY"], http=http)
        _two_users(main, checks, out)
        _two_tenants(tenant_a, tenant_b, admin, checks, out)
    total = checks.passed + checks.failed
    out(f"\n{checks.passed} of {total} isolation checks passed.")
    return 0 if checks.failed == 0 else 1


def _shown(names: dict[str, str], out: Out) -> dict[str, list[Callable[..., Any]]]:
    """httpx event hooks that print each request as curl and each response in a line."""

    def show_request(request: httpx.Request) -> None:
        out(_curl(request, names))

    def show_response(response: httpx.Response) -> None:
        response.read()
        text = json.dumps(response.json()) if response.content else ""
        if len(text) > _WIDTH:
            text = text[: _WIDTH - 4] + " ..."
        out(f"-> {response.status_code} {text}".rstrip())

    return {"request": [show_request], "response": [show_response]}


def _two_users(main: Formation, checks: _Checks, out: Out) -> None:
    """Steps 1-5: two users of one tenant, memory across sessions, no reading across."""
    out("\n1. User A starts a session and tells the agent a preference")
    session = main.create_session(user_id="user_a")
    told = main.chat("Remember I like Python", session_id=session.id, user_id="user_a")
    checks.check("Python" in told.response, "the agent stored user A's preference")

    out("\n2. User B asks; user B has no such memory")
    answer = main.chat("What language do I like?", user_id="user_b")
    checks.check(answer.response == UNKNOWN_PREFERENCE, f"user B hears {UNKNOWN_PREFERENCE!r}")

    out("\n3. User A asks in a new session: memory outlives the session")
    answer = main.chat("What language do I like?", user_id="user_a")
    checks.check(answer.response == "You like Python.", "user A hears 'You like Python.'")
    checks.check(answer.session_id != session.id, "a new session was created")

    out("\n4. User B tries to read user A's session")
    try:
        main.history(session.id, user_id="user_b")
        checks.check(False, "user B cannot read user A's session")
    except SessionNotFound:
        checks.check(True, "user B gets 404 session_not_found, as for an unknown id")

    out("\n5. User A reads the session's history")
    history = main.history(session.id, user_id="user_a")
    contents = [m.content for m in history.messages]
    checks.check(
        contents[:1] == ["Remember I like Python"] and len(contents) == 2,
        "the history holds user A's turn and the answer",
    )


def _two_tenants(
    tenant_a: Formation, tenant_b: Formation, admin: Formation, checks: _Checks, out: Out
) -> None:
    """Steps 6-8: the same user id in two tenants, a key held to its tenant, an export."""
    out("\n6. Two tenants, the same user id: tenant_a:user_1 and tenant_b:user_1")
    tenant_a.chat("Remember I like Rust", user_id="tenant_a:user_1")
    answer = tenant_b.chat("What language do I like?", user_id="tenant_b:user_1")
    checks.check(
        answer.response == UNKNOWN_PREFERENCE, "tenant_b:user_1 sees nothing of tenant_a:user_1"
    )
    answer = tenant_a.chat("What language do I like?", user_id="tenant_a:user_1")
    checks.check(answer.response == "You like Rust.", "tenant_a:user_1 hears 'You like Rust.'")

    out("\n7. Tenant A's key tries to act for a user of tenant B")
    try:
        tenant_a.chat("What language do I like?", user_id="tenant_b:user_1")
        checks.check(False, "tenant A's key is refused for tenant B")
    except Forbidden:
        checks.check(True, "403 forbidden")

    out("\n8. An admin exports user A")
    export = admin.export_user("user_a")
    memories = [m["content"] for m in export["memories"]]
    checks.check(memories == ["I like Python"], "user A's export holds only user A's memory")
