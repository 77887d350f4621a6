"""The operation pipeline: every storage operation, sync and async, fails closed.

The operations are found by introspection (every public ``Backend`` method made by
``operations.methods``), so a new operation without a row in ``EXAMPLES`` fails
``test_every_operation_has_an_example``. Each is called on both halves with no scope, with a
string where the scope goes and, when it needs a session, with a user-level scope; each
refuses with ``MissingScope`` before its backend is reached (the backend here counts what
reaches it). The refusal is made by the operation, before any backend runs, so one backend
serves; ``tests/security/test_both_halves.py`` holds every public pair to it on all three.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from muxi_isolation import Backend, Memory, Message, MissingScope, Scope
from muxi_isolation.errors import InvalidIdentifier, UnsupportedOperation
from muxi_isolation.records import SessionRecord
from muxi_isolation.stores.graph import (
    CheckpointQuery,
    CheckpointRecord,
    ItemQuery,
    StoreItem,
    WriteRecord,
)
from muxi_isolation.stores.memory import MemoryBackend
from muxi_isolation.stores.operations import Operation

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
USER = Scope("acme", "alice")
RECORD = SessionRecord("s1", USER, NOW, NOW, NOW + timedelta(days=1))
CHECKPOINT = CheckpointRecord("t1", "", "c1", None, "json", b"{}")

# Arguments after the scope for each operation: valid, so only the scope can be refused.
EXAMPLES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "insert_session": ((RECORD,), {}),
    "get_receipt": (("key",), {}),
    "get_session": (("s1",), {}),
    "list_sessions": ((), {}),
    "touch_session": (("s1", NOW, NOW), {}),
    "renew_session": (("s1",), {"now": NOW, "expires_at": NOW}),
    "delete_session": (("s1",), {}),
    "append_messages": (([Message("user", "hi")],), {}),
    "replace_messages": (([Message("user", "hi")],), {}),
    "restore_messages": (([Message("user", "hi", seq=1)],), {}),
    "append_to_session": (([Message("user", "hi")],), {"now": NOW, "expires_at": NOW}),
    "get_messages": ((), {}),
    "read_turn": (("s1",), {"now": NOW, "last": 5}),
    "count_messages": ((), {}),
    "delete_messages": ((), {}),
    "delete_message": ((1,), {}),
    "take_oldest": ((1,), {"archive": False}),
    "upsert_memories": (([Memory("m1", "x", embedding=[1.0, 0.0])],), {}),
    "get_memories": ((["m1"],), {}),
    "list_memories": ((), {}),
    "count_memories": ((), {}),
    "delete_memories": ((), {"ids": ["m1"]}),
    "search_memories": (([1.0, 0.0],), {}),
    "forget_user": ((), {}),
    "list_message_sessions": ((), {}),
    "put_checkpoint": ((CHECKPOINT,), {}),
    "get_checkpoints": ((CheckpointQuery(thread_id="t1"),), {}),
    "put_checkpoint_writes": (
        ([WriteRecord("t1", "", "c1", "task", 0, "ch", "bytes", b"x")],),
        {"replace": False},
    ),
    "delete_thread": (("t1",), {}),
    "copy_thread": (("t1", "t2"), {}),
    "prune_threads": ((["t1"],), {"keep_latest": True}),
    "delete_checkpoints": ((CheckpointQuery(thread_id="t1"),), {}),
    "get_items": (([(("ns",), "k")],), {"now": NOW}),
    "put_items": (([StoreItem(("ns",), "k", {"v": 1})], []), {}),
    "search_items": ((ItemQuery(("ns",)),), {"now": NOW}),
    "refresh_items": (([StoreItem(("ns",), "k", {"v": 1}, ttl=1.0)],), {"now": NOW}),
    "list_namespaces": (([],), {"now": NOW}),
}
TENANT_WIDE = {"forget_tenant", "list_tenants", "purge_expired"}


def operations() -> dict[str, type[Operation[Any]]]:
    """Every public operation of ``Backend`` (graph ones included), by method name."""
    found = {}
    for name, member in inspect.getmembers(Backend):
        op = getattr(member, "__muxi_operation__", None)
        if op is not None and not name.startswith("a" + op.name):
            found[name] = op
    return found


class Counting(MemoryBackend):
    """A memory backend that counts the primitives that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.performed: list[str] = []

    def _perform(self, op: Operation[Any]) -> Any:
        self.performed.append(op.name)
        return super()._perform(op)


def _halves(backend: Backend, name: str) -> list[Callable[..., Any]]:
    def run_async(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(getattr(backend, f"a{name}")(*args, **kwargs))

    return [getattr(backend, name), run_async]


def test_every_operation_has_an_example() -> None:
    per_user = {n for n, op in operations().items() if op.level != "tenant"}
    assert per_user == set(EXAMPLES)
    assert {n for n, op in operations().items() if op.level == "tenant"} == TENANT_WIDE


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("half", [0, 1], ids=["sync", "async"])
def test_every_operation_fails_closed(name: str, half: int) -> None:
    backend = Counting()
    args, kwargs = EXAMPLES[name]
    call = _halves(backend, name)[half]
    bad: list[object] = [None, "acme:alice"]
    if operations()[name].level == "session":
        bad.append(USER)  # a user-level scope where a session is needed
    for scope in bad:
        with pytest.raises(MissingScope):
            call(scope, *args, **kwargs)
    assert backend.performed == []  # nothing reached storage


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("half", [0, 1], ids=["sync", "async"])
def test_every_operation_runs_with_its_scope(name: str, half: int) -> None:
    """The examples are good: with a scope each operation gets past the policy."""
    backend = Counting()
    args, kwargs = EXAMPLES[name]
    scope = USER.with_session("s1") if operations()[name].level == "session" else USER
    if name != "insert_session":
        backend.insert_session(USER, RECORD)  # the session the others act on
    backend.performed.clear()
    _halves(backend, name)[half](scope, *args, **kwargs)
    assert backend.performed  # it reached storage


@pytest.mark.parametrize("half", [0, 1], ids=["sync", "async"])
def test_tenant_wide_operations_take_no_user_scope(half: int) -> None:
    backend = Counting()
    with pytest.raises(InvalidIdentifier):
        _halves(backend, "forget_tenant")[half](USER)
    with pytest.raises(InvalidIdentifier):
        _halves(backend, "purge_expired")[half](NOW, tenant_id=USER)
    assert backend.performed == []


@pytest.mark.parametrize("half", [0, 1], ids=["sync", "async"])
def test_an_operation_a_backend_lacks_is_a_typed_error(half: int) -> None:
    class Bare(Backend):
        """Implements nothing."""

    with pytest.raises(UnsupportedOperation, match="get_session"):
        _halves(Bare(), "get_session")[half](USER, "s1")
