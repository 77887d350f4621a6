"""Issue 16, the framework user's first hour: constructors from a URL, client-chosen session
ids under one option, the session timeout from config, serializable chat stores, one name
for the offline embedding's dimension, and missing extras that name themselves."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _clock import Clock
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.memory import ChatMemoryBuffer

from muxi_isolation import (
    Backend,
    ConfigError,
    Isolation,
    MissingScope,
    Scope,
    SessionExpired,
    SessionNotFound,
    use_scope,
)
from muxi_isolation.adapters import langchain as lc
from muxi_isolation.adapters import langgraph as lg
from muxi_isolation.adapters import llamaindex as li
from muxi_isolation.adapters.langchain import LangChainAgent
from muxi_isolation.adapters.llamaindex import LlamaIndexAgent
from muxi_isolation.agent import as_agent, load_agent
from muxi_isolation.stores.sql import SQLBackend

ALICE = Scope.parse("tenant_a:alice")
BOB = Scope.parse("tenant_a:bob")
RWMH_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated"
    ":langchain_core._api.deprecation.LangChainDeprecationWarning"
)

# -- item 2: every adapter class opens (and closes) its own storage from a URL ------------

EMBED = lc.HashingEmbeddings(dim=8)
MAKERS: dict[str, Callable[[str], Any]] = {
    "history-factory": lambda url: lc.MuxiHistoryFactory.from_url(url),
    "history": lambda url: lc.MuxiChatMessageHistory.from_url(url, ALICE.with_session("c")),
    "langchain-vectors": lambda url: lc.MuxiVectorStore.from_url(
        url, EMBED, scope=ALICE, embedding_dimension=8
    ),
    "llamaindex-vectors": lambda url: li.MuxiVectorStore.from_url(
        url, ALICE, embedding_dimension=8
    ),
    "chat-store": lambda url: li.MuxiChatStore.from_url(url, ALICE),
    "db-chat-store": lambda url: li.MuxiDBChatStore.from_url(url, ALICE),
    "checkpointer": lambda url: lg.MuxiCheckpointer.from_url(url),
    "store": lambda url: lg.MuxiStore.from_url(url),
}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize("kind", MAKERS)
def test_from_url_opens_sets_up_and_closes_its_own_backend(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with MAKERS[kind](f"sqlite:///{path}") as made:
        backend = made._storage_backend()
        assert isinstance(backend, SQLBackend) and not backend._closed
        made.setup()
        assert "muxi_sessions" in tables(path)
    assert backend._closed


@pytest.mark.parametrize("kind", MAKERS)
async def test_from_url_async_with_closes_its_own_backend(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    async with MAKERS[kind](f"sqlite:///{path}") as made:
        backend = made._storage_backend()
        await made.asetup()
        assert "muxi_sessions" in tables(path)
    assert backend._closed


def test_a_shared_backend_stays_open(make_backend: Callable[..., Backend]) -> None:
    backend = make_backend("sqlite")
    for made in (li.MuxiChatStore(backend, ALICE), lg.MuxiStore(Isolation(backend))):
        with made:
            pass
    assert not backend._closed  # type: ignore[attr-defined]
    lg.MuxiCheckpointer.from_url("memory://").for_user(ALICE).close()  # a copy owns nothing


def test_from_url_data_outlives_the_object(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with lc.MuxiHistoryFactory.from_url(url) as factory:
        factory("chat-1", "tenant_a:alice").add_messages([HumanMessage("hi")])
    with lc.MuxiHistoryFactory.from_url(url) as factory:
        assert factory("chat-1", "tenant_a:alice").messages == [HumanMessage("hi")]


async def test_from_url_async_data_outlives_the_object(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    async with li.MuxiChatStore.from_url(url, ALICE) as store:
        await store.async_add_message("chat-1", ChatMessage(role="user", content="hi"))
    async with li.MuxiChatStore.from_url(url, ALICE) as store:
        assert [m.content for m in await store.aget_messages("chat-1")] == ["hi"]


# -- item 3: the session timeout comes from the config -------------------------------------


def test_from_config_takes_the_configured_session_timeout(tmp_path: Path) -> None:
    config = {
        "memory": {
            "session_timeout": 90,
            "persistent": {"connection_string": f"sqlite:///{tmp_path / 'a.db'}"},
        }
    }
    for made in (
        lc.MuxiHistoryFactory.from_config(config),
        li.MuxiChatStore.from_config(config, ALICE),
        lg.MuxiCheckpointer.from_config(config),
    ):
        with made:
            sessions = made.sessions if hasattr(made, "sessions") else made._binding.sessions
            assert sessions.timeout == timedelta(seconds=90)


def test_an_isolation_brings_its_session_timeout(backend: Backend) -> None:
    clock = Clock(datetime(2026, 1, 8, tzinfo=timezone.utc))
    iso = Isolation(backend, session_timeout=60, clock=clock)
    history = lc.MuxiHistoryFactory(iso)("chat-1", "tenant_a:alice")
    store = li.MuxiChatStore(iso, ALICE)
    history.add_messages([HumanMessage("hi")])
    store.add_message("chat-2", ChatMessage(role="user", content="hi"))
    clock.now += timedelta(seconds=61)  # past 60 s, far short of the default 3600
    with pytest.raises(SessionExpired):
        history.add_messages([HumanMessage("late")])
    with pytest.raises(SessionExpired):
        store.add_message("chat-2", ChatMessage(role="user", content="late"))


async def test_an_isolation_brings_its_session_timeout_async(backend: Backend) -> None:
    clock = Clock(datetime(2026, 1, 8, tzinfo=timezone.utc))
    iso = Isolation(backend, session_timeout=60, clock=clock)
    history = lc.MuxiHistoryFactory(iso)("chat-1", "tenant_a:alice")
    store = li.MuxiDBChatStore(iso, ALICE)
    await history.aadd_messages([HumanMessage("hi")])
    await store.add_message("chat-2", ChatMessage(role="user", content="hi"))
    clock.now += timedelta(seconds=61)
    with pytest.raises(SessionExpired):
        await history.aadd_messages([HumanMessage("late")])
    with pytest.raises(SessionExpired):
        await store.add_message("chat-2", ChatMessage(role="user", content="late"))


# -- item 3: a session id the client picks becomes that user's session ---------------------


async def test_client_chosen_ids_are_per_user_async(backend: Backend) -> None:
    factory = lc.MuxiHistoryFactory(backend)
    await factory("chat-1", "tenant_a:alice").aadd_messages([HumanMessage("alice's")])
    bob = factory("chat-1", "tenant_a:bob")
    assert await bob.aget_messages() == []
    await bob.aadd_messages([HumanMessage("bob's")])
    alice = await factory("chat-1", "tenant_a:alice").aget_messages()
    assert alice == [HumanMessage("alice's")]


async def test_create_sessions_false_requires_a_made_session(backend: Backend) -> None:
    strict = lc.MuxiHistoryFactory(backend, create_sessions=False)
    with pytest.raises(SessionNotFound):
        strict("chat-1", "tenant_a:alice")
    history = lc.MuxiChatMessageHistory(backend, ALICE.with_session("c"), create_sessions=False)
    with pytest.raises(SessionNotFound):
        await history.aadd_messages([HumanMessage("x")])


def test_create_missing_is_a_deprecated_alias(backend: Backend) -> None:
    with pytest.warns(DeprecationWarning, match="create_sessions"):
        factory = lc.MuxiHistoryFactory(backend, create_missing=False)
    assert factory.create_sessions is False


def _chain(factory: lc.MuxiHistoryFactory) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{q}")])
    model = GenericFakeChatModel(messages=iter([AIMessage("one"), AIMessage("two")]))
    return RunnableWithMessageHistory(
        prompt | model, factory, input_messages_key="q", history_messages_key="history"
    )


@RWMH_DEPRECATED
def test_without_history_factory_config_the_user_comes_from_the_context(
    backend: Backend,
) -> None:
    chain = _chain(lc.MuxiHistoryFactory(backend))
    config: Any = {"configurable": {"session_id": "chat-1"}}
    with pytest.raises(MissingScope, match="history_factory_config"):
        chain.invoke({"q": "hi"}, config)
    with use_scope(ALICE):
        assert chain.invoke({"q": "hi"}, config).content == "one"
    stored = lc.MuxiChatMessageHistory(backend, ALICE.with_session("chat-1")).messages
    assert [m.content for m in stored] == ["hi", "one"]


@RWMH_DEPRECATED
async def test_without_history_factory_config_async(backend: Backend) -> None:
    chain = _chain(lc.MuxiHistoryFactory(backend))
    config: Any = {"configurable": {"session_id": "chat-1"}}
    with pytest.raises(MissingScope):
        await chain.ainvoke({"q": "hi"}, config)
    with use_scope(BOB):
        assert (await chain.ainvoke({"q": "hi"}, config)).content == "one"
    assert (
        await lc.MuxiChatMessageHistory(backend, ALICE.with_session("chat-1")).aget_messages() == []
    )


# -- item 6: ChatMemoryBuffer round-trips a MuxiChatStore -----------------------------------


def test_chat_memory_buffer_round_trips(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with li.MuxiChatStore.from_url(url, ALICE, session_timeout=120) as store:
        buffer = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="chat-1")
        buffer.put(ChatMessage(role="user", content="I keep bees."))
        text = buffer.to_string()
    assert "backend" not in text and "_binding" not in text
    restored = ChatMemoryBuffer.from_string(text)
    store2 = restored.chat_store
    assert isinstance(store2, li.MuxiChatStore)
    with store2:
        assert [m.content for m in restored.get_all()] == ["I keep bees."]
        assert store2._binding.sessions.timeout == timedelta(seconds=120)
        assert li.MuxiChatStore.from_dict(store.to_dict()).user_id == "tenant_a:alice"


async def test_chat_memory_buffer_round_trips_async(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    async with li.MuxiChatStore.from_url(url, ALICE) as store:
        buffer = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="chat-1")
        await buffer.aput(ChatMessage(role="user", content="I keep bees."))
        data = buffer.to_dict()
    restored = ChatMemoryBuffer.from_dict(data)
    async with restored.chat_store as store2:
        assert [m.content for m in await restored.aget_all()] == ["I keep bees."]
        assert await store2.aget_messages("chat-1") != []


def test_a_store_on_a_shared_backend_says_how_to_restore(backend: Backend) -> None:
    buffer = ChatMemoryBuffer.from_defaults(chat_store=li.MuxiChatStore(backend, ALICE))
    with pytest.raises(ConfigError, match="chat_store="):
        ChatMemoryBuffer.from_dict(buffer.to_dict())


# -- item 6: the user's own model subclasses are agents -------------------------------------


class MyChatModel(GenericFakeChatModel):
    """A user's own LangChain model: its class lives in the user's module."""


class MyLLM(MockLLM):
    """A user's own LlamaIndex LLM."""


def test_as_agent_takes_a_users_own_subclasses() -> None:
    assert isinstance(as_agent(MyChatModel(messages=iter([]))), LangChainAgent)
    assert isinstance(as_agent(MyLLM()), LlamaIndexAgent)
    with pytest.raises(ConfigError):
        as_agent(object())


def test_serve_agent_loads_a_users_own_subclass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_app.py").write_text(
        "from llama_index.core.llms import MockLLM\n\nclass Bot(MockLLM):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(load_agent("my_app:Bot"), LlamaIndexAgent)


# -- item 6: one name for the offline embedding's dimension ---------------------------------


def test_both_hashing_embeddings_take_dim() -> None:
    assert lc.HashingEmbeddings(dim=8).embed_query("bees") == li.HashingEmbedding(
        dim=8
    ).get_query_embedding("bees")
    with pytest.warns(DeprecationWarning, match="dim="):
        old = lc.HashingEmbeddings(size=8)
    assert old.dim == 8


# -- item 6: missing extras name the pip line ----------------------------------------------


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", block + code], capture_output=True, text=True, check=False
    )


def test_demo_without_the_server_extra_names_it() -> None:
    done = run_without(
        ["httpx", "starlette", "uvicorn"],
        "from muxi_isolation.cli import main\nsys.exit(main(['demo']))",
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'muxi-isolation[server]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_pgvector_import_without_the_postgres_extra_names_it() -> None:
    done = run_without(
        ["psycopg"],
        "from muxi_isolation.cli import main\n"
        "sys.exit(main(['import', 'langchain-pgvector', 'postgresql://u@127.0.0.1:9/x',"
        " '--map', '{tenant}:{user}']))",
    )
    assert done.returncode == 2, done.stderr
    assert "psycopg is not installed: pip install 'muxi-isolation[postgres]'" in done.stderr


def test_the_client_needs_only_httpx() -> None:
    done = run_without(["starlette", "uvicorn"], "import muxi_isolation.client")
    assert done.returncode == 0, done.stderr
    done = run_without(["httpx"], "import muxi_isolation.client")
    assert "pip install 'muxi-isolation[client]'" in done.stderr


def test_a_missing_server_module_is_named_alone() -> None:
    done = run_without(["uvicorn"], "import muxi_isolation.server")
    assert "uvicorn is not installed: pip install 'muxi-isolation[server]'" in done.stderr
