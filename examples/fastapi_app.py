"""A FastAPI app whose every route acts for the user the request names, and no one else.

``MuxiIsolationMiddleware`` checks the key and turns ``X-Muxi-User-Id`` into a ``Scope``
once per request; ``Depends(get_scope)`` hands that scope to a route, and small
dependencies built on it hand out handles (``UserMemories``, ``SessionMessages``) that reach
that one user alone. The library's typed errors become its JSON errors (404 for another
user's session, exactly as for an unknown one).

Run: python examples/fastapi_app.py   (plays two users and two tenants against it, offline)
Needs: pip install 'muxi-isolation[server]' fastapi
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from muxi_isolation import Isolation, IsolationError, KeyRing, Scope, get_scope
from muxi_isolation.facade import SessionMessages, UserMemories
from muxi_isolation.http import MuxiIsolationMiddleware, error_response

iso = Isolation()  # in memory here; Isolation.from_config("muxi.yaml") in a real app
keys = KeyRing()
KEY = keys.add_client_key("tenant_a")  # a generated fmc_... key, bound to tenant_a

app = FastAPI(title="notes")
app.add_middleware(MuxiIsolationMiddleware, keys=keys)

# The scope the middleware resolved for this request (MissingScope outside the middleware).
CurrentScope = Annotated[Scope, Depends(get_scope)]


def user_memories(scope: CurrentScope) -> UserMemories:
    """This user's persistent memory, and nobody else's."""
    return iso.memories(scope.header)


def session_messages(session_id: str, scope: CurrentScope) -> SessionMessages:
    """The path's session if it is this user's (``SessionNotFound`` -> 404 otherwise)."""
    return iso.messages(session_id, scope.header)


Memories = Annotated[UserMemories, Depends(user_memories)]
Messages = Annotated[SessionMessages, Depends(session_messages)]


class Note(BaseModel):
    text: str


@app.exception_handler(IsolationError)
async def isolation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IsolationError)
    status, body = error_response(exc)
    return JSONResponse(body, status_code=status)


@app.get("/me")
async def me(scope: CurrentScope) -> dict[str, str]:
    return {"tenant": scope.tenant_id, "user": scope.user_id}


@app.post("/notes")
async def add_note(note: Note, memories: Memories) -> dict[str, str]:
    return {"id": await memories.aadd(note.text)}


@app.get("/notes")
async def list_notes(memories: Memories) -> list[str]:
    return [m.content for m in await memories.alist()]


@app.post("/sessions")
async def new_session(scope: CurrentScope) -> dict[str, str]:
    return {"id": iso.create_session(scope.header).id}


@app.post("/sessions/{session_id}/messages")
async def say(note: Note, messages: Messages) -> dict[str, int]:
    await messages.aadd("user", note.text)
    return {"messages": len(await messages.aget())}


@app.get("/sessions/{session_id}/messages")
async def history(messages: Messages) -> list[Any]:
    return [m.content for m in await messages.aget()]


def main() -> None:
    from fastapi.testclient import TestClient

    def as_user(user: str) -> dict[str, str]:
        return {"X-Muxi-Client-Key": KEY, "X-Muxi-User-Id": user}

    alice, bob = as_user("tenant_a:alice"), as_user("tenant_a:bob")
    with TestClient(app) as client:
        print("alice /me:", client.get("/me", headers=alice).json())
        client.post("/notes", json={"text": "Alice keeps bees."}, headers=alice)
        print("alice's notes:", client.get("/notes", headers=alice).json())
        print("bob's notes:  ", client.get("/notes", headers=bob).json())
        sid = client.post("/sessions", headers=alice).json()["id"]
        client.post(f"/sessions/{sid}/messages", json={"text": "hello"}, headers=alice)
        peek = client.get(f"/sessions/{sid}/messages", headers=bob)
        print("bob reading alice's session:", peek.status_code, peek.json()["error"])
        other = client.get("/notes", headers=as_user("tenant_b:alice"))
        print("a tenant_a key acting for tenant_b:", other.status_code, other.json()["error"])
        assert client.get("/notes", headers=bob).json() == []
        assert peek.status_code == 404 and other.status_code == 403
    print("isolation held: each route saw only its own user's data.")


if __name__ == "__main__":
    main()
