"""Expired-session retention: ``memory.expired_session_retention`` seconds after a session
expires, a purge deletes it whole (record, messages, LangGraph checkpoints of that thread);
memories stay. Unset, expired sessions are kept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from muxi_isolation import (
    Backend,
    ConfigError,
    Memory,
    Message,
    Scope,
    SessionManager,
    SessionRecord,
    load_config,
)
from muxi_isolation.adapters.langgraph import MuxiCheckpointer
from muxi_isolation.migrate import apurge_expired, purge_expired, retention_cutoff

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ALICE = Scope("tenant_a", "alice")
CAROL = Scope("tenant_b", "carol")
HOUR = timedelta(hours=1)


def config(retention: Any) -> Any:
    memory: dict[str, Any] = {"session_timeout": 600}
    if retention is not None:
        memory["expired_session_retention"] = retention
    return load_config({"memory": memory})


def session(backend: Backend, user: Scope, sid: str, expires: datetime) -> None:
    backend.insert_session(user, SessionRecord(sid, user, expires - HOUR, expires - HOUR, expires))
    backend.append_messages(
        user.with_session(sid), [Message("user", f"{sid} a"), Message("assistant", f"{sid} b")]
    )


def fill(backend: Backend) -> None:
    for user in (ALICE, CAROL):
        session(backend, user, "long_gone", NOW - 3 * HOUR)  # expired 3 h ago
        session(backend, user, "recent", NOW - HOUR / 2)  # expired 30 min ago
        session(backend, user, "live", NOW + HOUR)  # not expired
        backend.upsert_memories(user.with_session("long_gone"), [Memory("fact", "likes tea")])


def test_purge_follows_the_configured_retention(backend: Backend) -> None:
    fill(backend)
    then = SessionManager(backend, clock=lambda: NOW - 5 * HOUR)  # the thread's time
    checkpointer = MuxiCheckpointer(backend, sessions=then, scope=ALICE)
    checkpointer.put(
        {"configurable": {"thread_id": "thread", "checkpoint_ns": ""}},
        empty_checkpoint(),
        {"source": "input", "step": -1},
        {},
    )
    report = purge_expired(backend, config(3600), clock=lambda: NOW)
    assert report.before == NOW - HOUR
    assert report.deleted == {"sessions": 3, "messages": 4, "checkpoints": 1}
    assert "purged sessions expired at or before 2026-03-01T11:00:00" in report.format()
    for user in (ALICE, CAROL):
        assert [s.id for s in backend.list_sessions(user)] == ["recent", "live"]
        assert backend.get_messages(user.with_session("long_gone")) == []
        assert len(backend.get_messages(user.with_session("recent"))) == 2
        assert [m.content for m in backend.list_memories(user)] == ["likes tea"]  # persists
    assert checkpointer.get_tuple({"configurable": {"thread_id": "thread"}}) is None


def test_zero_retention_purges_every_expired_session(backend: Backend) -> None:
    fill(backend)
    report = purge_expired(backend, 0, tenant_id="tenant_b", clock=lambda: NOW)
    assert report.deleted == {"sessions": 2, "messages": 4}
    assert [s.id for s in backend.list_sessions(CAROL)] == ["live"]
    assert len(backend.list_sessions(ALICE)) == 3  # another tenant


def test_no_retention_keeps_everything(backend: Backend) -> None:
    fill(backend)
    report = purge_expired(backend, config(None), clock=lambda: NOW)
    assert report.before is None and report.deleted == {}
    assert "kept" in report.format()
    assert len(backend.list_sessions(ALICE)) == 3


async def test_apurge_expired(backend: Backend) -> None:
    fill(backend)
    kept = await apurge_expired(backend, config(None), clock=lambda: NOW)
    assert kept.before is None and kept.deleted == {}
    assert len(backend.list_sessions(ALICE)) == 3
    report = await apurge_expired(backend, 7200, clock=lambda: NOW)
    assert report.to_dict() == {
        "before": "2026-03-01T10:00:00.000000+00:00",
        "tenant_id": None,
        "deleted": {"sessions": 2, "messages": 4},
    }


def test_retention_cutoff() -> None:
    assert retention_cutoff(None, NOW) is None
    assert retention_cutoff(60, NOW) == NOW - timedelta(minutes=1)
    assert retention_cutoff(config(0), NOW) == NOW
    with pytest.raises(ValueError):
        retention_cutoff(-1, NOW)


@pytest.mark.parametrize("bad", [-1, "3600", True, 1.5, [1]])
def test_the_config_key_is_strict(bad: Any) -> None:
    with pytest.raises(ConfigError, match="expired_session_retention"):
        config(bad)


def test_the_config_keys_parse() -> None:
    loaded = load_config(
        "memory:\n  expired_session_retention: 86400\n  persistent:\n"
        "    provider: postgresql\n    connection_string: postgresql://app@db/muxi\n"
        "    admin_connection_string: ${{ secrets.OWNER }}\n",
        secrets={"OWNER": "postgresql://owner@db/muxi"},
    )
    assert loaded.memory.expired_session_retention == 86400
    assert loaded.memory.persistent.admin_connection_string == "postgresql://owner@db/muxi"
    assert load_config(None).memory.expired_session_retention is None
