"""The demo agent (the seed's scenario word for word) and the swap to a real model."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda
from llama_index.core.llms import MockLLM

from muxi_isolation import (
    AdapterUnavailable,
    Backend,
    ConfigError,
    Isolation,
    KeyRing,
    Memory,
    Message,
    MissingScope,
    Scope,
    SessionManager,
)
from muxi_isolation.adapters.langchain import LangChainAgent
from muxi_isolation.adapters.llamaindex import LlamaIndexAgent
from muxi_isolation.agent import (
    HELP,
    UNKNOWN_PREFERENCE,
    Agent,
    DemoAgent,
    Fact,
    Turn,
    as_agent,
    load_agent,
    parse_fact,
)
from muxi_isolation.server import create_app

KEY = "fmc_agent_tests"


@pytest.fixture
def isolation(backend: Backend) -> Isolation:
    return Isolation(backend)


async def say(isolation: Isolation, user: str, message: str, session: str | None = None) -> str:
    """One demo-agent turn for ``user`` in a (new, unless given) session."""
    scope = Scope.parse(user)
    sid = session or (await isolation.sessions.acreate(scope)).id
    return await DemoAgent().respond(Turn(isolation, scope.with_session(sid), message))


# -- what the demo understands --------------------------------------------------------------

PARSES = [
    ("Remember I like Python", ("tell", Fact("preference", "language", "Python"))),
    ("remember that I love Rust!", ("tell", Fact("preference", "language", "Rust"))),
    (
        "Please remember, I prefer dark roast coffee.",
        ("tell", Fact("preference", "general", "dark roast coffee")),
    ),
    ("Remember my name is Ada Lovelace", ("tell", Fact("fact", "name", "Ada Lovelace"))),
    (
        "Remember that my favorite color is green.",
        ("tell", Fact("fact", "favorite color", "green")),
    ),
    ("What language do I like?", ("ask", Fact("preference", "language"))),
    ("which programming languages do I prefer", ("ask", Fact("preference", "language"))),
    ("What do I like?", ("ask", Fact("preference", None))),
    ("What is my name?", ("ask", Fact("fact", "name"))),
    ("what's my favorite  color", ("ask", Fact("fact", "favorite color"))),
    ("Hello", None),
    ("I like Python", None),  # not asked to remember
    ("Do you remember me?", None),
]


@pytest.mark.parametrize(("message", "expected"), PARSES)
def test_parse(message: str, expected: tuple[str, Fact] | None) -> None:
    assert parse_fact(message) == expected


# -- the seed's scenario ----------------------------------------------------------------------


async def test_the_seed_scenario_word_for_word(isolation: Isolation) -> None:
    assert await say(isolation, "user_a", "Remember I like Python") == (
        "Got it. I'll remember that you like Python."
    )
    assert await say(isolation, "user_b", "What language do I like?") == (
        "I don't know your preference yet."
    )
    assert await say(isolation, "user_a", "What language do I like?") == "You like Python."


async def test_the_preference_is_stored_in_the_users_memory(isolation: Isolation) -> None:
    scope = Scope.parse("tenant_a:user_1")
    sid = (await isolation.sessions.acreate(scope)).id
    await say(isolation, "tenant_a:user_1", "Remember I like Python", sid)
    [memory] = isolation.memories("tenant_a:user_1").list()
    assert memory.content == "I like Python"
    assert memory.metadata == {"kind": "preference", "topic": "language", "value": "Python"}
    assert memory.scope == scope.with_session(sid)  # made in that session, read per user
    assert isolation.memories("tenant_b:user_1").list() == []
    assert isolation.memories("tenant_a:user_2").list() == []


async def test_memory_never_crosses_users_or_tenants(isolation: Isolation) -> None:
    await say(isolation, "tenant_a:user_1", "Remember I like Python")
    others = ("tenant_a:user_2", "tenant_b:user_1", "user_1", "tenant_a:user_10", "tenant_a:user_")
    for other in others:
        assert await say(isolation, other, "What language do I like?") == UNKNOWN_PREFERENCE
        assert await say(isolation, other, "What do I like?") == UNKNOWN_PREFERENCE


async def test_several_preferences_distinct_and_in_order(isolation: Isolation) -> None:
    for message in (
        "Remember I like Python",
        "Remember I like Rust",
        "remember that I like python",
        "Remember I like Go",
    ):
        await say(isolation, "u", message)
    assert await say(isolation, "u", "What language do I like?") == (
        "You like Python, Rust and Go."
    )


async def test_topics_keep_apart(isolation: Isolation) -> None:
    await say(isolation, "u", "Remember I like pizza")
    assert await say(isolation, "u", "What language do I like?") == UNKNOWN_PREFERENCE
    assert await say(isolation, "u", "What do I like?") == "You like pizza."


async def test_facts_answer_with_the_latest_value(isolation: Isolation) -> None:
    assert await say(isolation, "u", "What is my name?") == "I don't know your name yet."
    await say(isolation, "u", "Remember my name is Ada")
    await say(isolation, "u", "Remember my name is Grace")
    assert await say(isolation, "u", "What is my name?") == "Your name is Grace."
    assert await say(isolation, "v", "What is my name?") == "I don't know your name yet."


async def test_anything_else_gets_the_help_text(isolation: Isolation) -> None:
    assert await say(isolation, "u", "Hello") == HELP
    assert isolation.memories("u").list() == []


# -- swapping in a real model -----------------------------------------------------------------


class Recorder(BaseCallbackHandler):
    """Records the messages each chat model call was given."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.calls.extend(messages)


def keys() -> KeyRing:
    ring = KeyRing()
    ring.add_client_key("tenant_a", KEY)
    return ring


async def post(http: httpx.AsyncClient, user: str, message: str, sid: str | None = None) -> Any:
    body = {"message": message} | ({"session_id": sid} if sid else {})
    response = await http.post(
        "/v1/chat", headers={"X-Muxi-Client-Key": KEY, "X-Muxi-User-Id": user}, json=body
    )
    assert response.status_code == 200, response.text
    return response.json()


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_langchain_chat_model_serves_the_chat(isolation: Isolation) -> None:
    recorder = Recorder()
    model = FakeListChatModel(
        responses=["noted", "hello B", "you like Python"], callbacks=[recorder]
    )
    agent = as_agent(model)
    assert isinstance(agent, LangChainAgent)
    async with client(create_app(isolation, keys(), agent)) as http:
        first = await post(http, "tenant_a:alice", "Remember I like Python")
        assert first["response"] == "noted"
        assert (await post(http, "tenant_a:bob", "What language do I like?"))["response"] == (
            "hello B"
        )
        sid = first["session_id"]
        third = await post(http, "tenant_a:alice", "What language do I like?", sid)
        assert third["response"] == "you like Python"
    alice_first, bob, alice_again = recorder.calls
    # the user's own memory goes into the system prompt, and never another user's
    assert "I like Python" in str(alice_again[0].content)
    assert "I like Python" not in str(bob[0].content)
    # the session's history is passed on, then the new message
    assert [m.type for m in alice_again] == ["system", "human", "ai", "human"]
    assert [m.content for m in alice_again[1:]] == [
        "Remember I like Python",
        "noted",
        "What language do I like?",
    ]
    assert [m.type for m in alice_first] == ["system", "human"]
    # the turns are stored in the session, whatever the agent
    history = isolation.history(sid, "tenant_a:alice")
    assert [m.content for m in history] == [
        "Remember I like Python",
        "noted",
        "What language do I like?",
        "you like Python",
    ]


async def test_a_langchain_agent_graph_takes_a_messages_state(isolation: Isolation) -> None:
    seen: list[Any] = []

    def graph(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(state)
        return {"messages": [*state["messages"], AIMessage("from the graph")]}

    agent = as_agent(RunnableLambda(graph))
    async with client(create_app(isolation, keys(), agent)) as http:
        reply = await post(http, "tenant_a:alice", "hi")
    assert reply["response"] == "from the graph"
    assert [m.type for m in seen[0]["messages"]] == ["system", "human"]


async def test_only_the_text_blocks_of_a_reply_are_the_response(isolation: Isolation) -> None:
    def graph(state: dict[str, Any]) -> dict[str, Any]:
        blocks = [
            {"type": "reasoning", "reasoning": "the user greets me"},
            {"type": "text", "text": "Hello, "},
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}},
            "Alice.",
        ]
        return {"messages": [*state["messages"], AIMessage(blocks)]}

    async with client(create_app(isolation, keys(), as_agent(RunnableLambda(graph)))) as http:
        reply = await post(http, "tenant_a:alice", "hi")
    assert reply["response"] == "Hello, Alice."
    stored = isolation.history(reply["session_id"], "tenant_a:alice")
    assert [m.content for m in stored] == ["hi", "Hello, Alice."]


async def test_a_llamaindex_llm_serves_the_chat(isolation: Isolation) -> None:
    agent = as_agent(MockLLM())  # MockLLM answers with the prompt it was given
    assert isinstance(agent, LlamaIndexAgent)
    async with client(create_app(isolation, keys(), agent)) as http:
        await post(http, "tenant_a:alice", "Remember I like Python")
        own = await post(http, "tenant_a:alice", "What language do I like?")
        other = await post(http, "tenant_a:bob", "What language do I like?")
    assert "- I like Python" in own["response"]
    assert "user: What language do I like?" in own["response"]
    assert "Python" not in other["response"]


async def test_memory_writes_can_be_turned_off(isolation: Isolation) -> None:
    agent = LangChainAgent(FakeListChatModel(responses=["ok"]), remember=False)
    async with client(create_app(isolation, keys(), agent)) as http:
        await post(http, "tenant_a:alice", "Remember I like Python")
    assert isolation.memories("tenant_a:alice").list() == []


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("langchain_core.language_models", lambda: LangChainAgent(object()), "langchain"),
        ("llama_index.core.llms", lambda: LlamaIndexAgent(object()), "llamaindex"),
    ],
)
def test_a_missing_framework_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, module: str, make: Any, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(AdapterUnavailable) as caught:
        make()
    assert f"pip install 'muxi-isolation[{extra}]'" in str(caught.value)


# -- the setting ------------------------------------------------------------------------------


def test_load_agent_takes_an_instance_by_a_dotted_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_agents.py").write_text(
        "from llama_index.core.llms import MockLLM\n"
        "from muxi_isolation.agent import DemoAgent\n"
        "AGENT = DemoAgent()\n"
        "class Models:\n"
        "    default = MockLLM()\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import my_agents  # type: ignore[import-not-found]

        assert load_agent("my_agents:AGENT") is my_agents.AGENT  # used as it is, not called
        made = load_agent("my_agents:Models.default")
        assert isinstance(made, LlamaIndexAgent) and made.llm is my_agents.Models.default
    finally:
        sys.modules.pop("my_agents", None)


def test_load_agent_specs() -> None:
    assert isinstance(load_agent(None), DemoAgent)
    assert isinstance(load_agent("demo"), DemoAgent)
    assert isinstance(load_agent("muxi_isolation.agent:DemoAgent"), DemoAgent)
    made = load_agent("llama_index.core.llms:MockLLM")
    assert isinstance(made, LlamaIndexAgent)
    assert isinstance(made.llm, MockLLM)
    with pytest.raises(ConfigError, match="module:attribute"):
        load_agent("no_colon_here")
    with pytest.raises(ConfigError, match="not an agent"):
        load_agent("collections:OrderedDict")
    with pytest.raises(ModuleNotFoundError):
        load_agent("no_such_module_here:x")


def test_anything_with_respond_is_an_agent() -> None:
    class Mine:
        async def respond(self, turn: Turn) -> str:
            return "mine"

    agent = Mine()
    assert isinstance(agent, Agent)
    assert as_agent(agent) is agent


# -- what a turn gives an agent ----------------------------------------------------------------

DOORS = (Backend, Isolation, SessionManager)
SCOPE_PARAMS = {"scope", "user_id", "tenant_id", "session_id", "tenant", "user"}


def reachable(root: object, depth: int = 3) -> list[tuple[str, object]]:
    """Every (path, object) an agent reaches from ``root`` through public attributes, not
    descending into plain data (ids, messages, memories, the scope's own fields)."""
    found: list[tuple[str, object]] = []
    todo: list[tuple[str, object, int]] = [("turn", root, depth)]
    while todo:
        path, obj, left = todo.pop()
        found.append((path, obj))
        if left == 0 or isinstance(obj, (str, int, float, Scope, Message, Memory, tuple, list)):
            continue
        for name in dir(obj):
            if not name.startswith("_"):
                todo.append((f"{path}.{name}", getattr(obj, name), left - 1))
    return found


async def test_a_turn_gives_the_agent_handles_bound_to_its_user_and_session(
    isolation: Isolation,
) -> None:
    """Through what a Turn holds an agent can name no other user or session and reach no
    backend, session manager or Isolation (so no tenant-wide maintenance either)."""
    seen: list[Turn] = []

    class Curious:
        async def respond(self, turn: Turn) -> str:
            seen.append(turn)
            return "ok"

    bob = Scope.parse("tenant_a:bob")
    bob_sid = (await isolation.sessions.acreate(bob)).id
    await isolation.sessions.aappend(bob.with_session(bob_sid), [Message("user", "bob's secret")])
    isolation.memories("tenant_a:bob").add("bob likes Rust", embedding=[1.0, 0.0])
    async with client(create_app(isolation, keys(), Curious())) as http:
        reply = await post(http, "tenant_a:alice", "hi")
    [turn] = seen
    alice = Scope.parse("tenant_a:alice").with_session(reply["session_id"])
    assert turn.scope == alice
    assert not hasattr(turn, "isolation")
    for path, obj in reachable(turn):
        assert not isinstance(obj, DOORS), path
        if callable(obj) and not isinstance(obj, type):
            assert not SCOPE_PARAMS & set(inspect.signature(obj).parameters), path
    # what the handles do reach is Alice's alone, on both halves
    await turn.memories.aadd("alice likes Python", embedding=[1.0, 0.0])
    mems = [*turn.memories.list(), *await turn.memories.alist()]
    mems += [m for m, _ in [*turn.memories.search([1.0, 0.0], 9)]]
    mems += [m for m, _ in await turn.memories.asearch([1.0, 0.0], 9)]
    assert {m.content for m in mems} == {"alice likes Python"}
    assert all(m.scope is not None and m.scope.same_user(alice) for m in mems)
    assert turn.memories.delete() == 1 and await turn.memories.adelete() == 0
    assert [m.content for m in await turn.messages.aget()] == ["hi", "ok"]
    assert await turn.messages.aclear() == 2
    assert [m.content for m in isolation.history(bob_sid, "tenant_a:bob")] == ["bob's secret"]
    assert [m.content for m in isolation.memories("tenant_a:bob").list()] == ["bob likes Rust"]


def test_a_turn_needs_a_session(isolation: Isolation) -> None:
    with pytest.raises(MissingScope):
        Turn(isolation, Scope.parse("tenant_a:alice"), "hi")
