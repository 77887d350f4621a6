"""``bench/load.py``'s baselines are the same app: they answer the load's turns as the
reference server does, and they really lack the isolation middleware (no key check)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from muxi_isolation.agent import UNKNOWN_PREFERENCE
from muxi_isolation.config import load_config
from muxi_isolation.facade import Isolation
from muxi_isolation.keys import KeyRing
from muxi_isolation.server import create_app

BENCH = Path(__file__).resolve().parents[1] / "bench" / "_load_servers.py"
KEYS = {"tenant_0": "fmc_load_test_0", "tenant_1": "fmc_load_test_1"}


def servers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_load_servers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_load_servers", module)
    spec.loader.exec_module(module)
    return module


def config_file(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    lines = ["memory:", "  persistent:", f'    connection_string: "{url}"']
    lines += ["    provider: sqlite", "auth:", "  client_keys:"]
    for tenant, key in KEYS.items():
        monkeypatch.setenv(f"KEY_{tenant.upper()}", key)
        lines += [f"    - tenant: {tenant}", f"      key: ${{{{ secrets.KEY_{tenant.upper()} }}}}"]
    path = tmp_path / f"{Path(url).stem}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ours(config: str) -> Any:
    loaded = load_config(Path(config))
    isolation = Isolation.from_config(loaded)
    return create_app(isolation, KeyRing.from_config(loaded.auth), close_on_shutdown=True)


@asynccontextmanager
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def who(user: str, key: str | None = None) -> dict[str, str]:
    tenant = user.partition(":")[0]
    return {"X-Muxi-Client-Key": key or KEYS[tenant], "X-Muxi-User-Id": user}


async def scenario(http: httpx.AsyncClient) -> list[Any]:
    """The load's turns: tell, ask in the session, other users ask, another reads it."""

    async def chat(user: str, message: str, session_id: str | None = None) -> Any:
        body = {"message": message} | ({"session_id": session_id} if session_id else {})
        response = await http.post("/v1/chat", headers=who(user), json=body)
        assert response.status_code == 200, response.text
        return response.json()

    told = await chat("tenant_0:alice", "Remember I like secret_0123456789abcdef")
    sid = told["session_id"]
    seen = [told["response"]]
    seen.append((await chat("tenant_0:alice", "What do I like?", sid))["response"])
    seen.append((await chat("tenant_0:bob", "What do I like?"))["response"])
    seen.append((await chat("tenant_1:alice", "What do I like?"))["response"])
    other = await http.get(f"/v1/sessions/{sid}", headers=who("tenant_0:bob"))
    mine = await http.get(f"/v1/sessions/{sid}", headers=who("tenant_0:alice"))
    seen += [other.status_code, [m["content"] for m in mine.json()["messages"]]]
    wrong_key = who("tenant_0:alice", key="fmc_not_a_key")
    seen.append(
        (await http.post("/v1/chat", headers=wrong_key, json={"message": "hi"})).status_code
    )
    return seen


async def test_the_baselines_answer_as_ours_without_its_key_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = servers()
    found = {}
    apps = {
        "ours": lambda url: ours(config_file(tmp_path, url, monkeypatch)),
        "bare": lambda url: bench.bare_app(config_file(tmp_path, url, monkeypatch)),
        "plain": bench.plain_app,
    }
    for name, make in apps.items():
        async with client(make(f"sqlite:///{tmp_path / name}.db")) as http:
            found[name] = await scenario(http)
    same = found["ours"][:-1]
    assert same[1] == "You like secret_0123456789abcdef."
    assert same[2:4] == [UNKNOWN_PREFERENCE, UNKNOWN_PREFERENCE]
    assert same[4] == 404 and len(same[5]) == 4
    assert found["bare"][:-1] == same
    assert found["plain"][1:-1] == same[1:]  # its first reply is the same sentence, shorter
    # ours refuses an unknown key; the baselines have no key check to refuse it with
    assert [found[n][-1] for n in apps] == [401, 200, 200]
