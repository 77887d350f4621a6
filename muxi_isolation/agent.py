"""The agent behind ``POST /v1/chat``: a demo that needs no network, or a real model.

``DemoAgent`` plays the seed's scenario word for word. It stores what a user tells it
("Remember I like Python") in that user's persistent memory, with metadata
``{"kind": "preference", "topic": "language", "value": "Python"}``, and answers from it
("What language do I like?" gives "You like Python."); a user with no such memory gets
"I don't know your preference yet." Memory outlives sessions; it never crosses users,
because every read and write goes through the backend with the turn's scope.

One setting swaps in a real model: anything with ``async respond(turn) -> str`` is an
``Agent``, and ``as_agent`` wraps a LangChain chat model or agent graph
(``muxi_isolation.adapters.langchain.LangChainAgent``) or a LlamaIndex LLM
(``muxi_isolation.adapters.llamaindex.LlamaIndexAgent``), the agent classes those adapters
register (``muxi_isolation.registry``). Those keep the same memory: "Remember ..." is
stored the same way, and the user's memories go into the system prompt
(``system_prompt``). This module imports no framework and no adapter: an adapter is
loaded when an object of its framework is given.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import policy, registry
from .errors import ConfigError
from .facade import SessionMessages, UserMemories
from .records import Memory, Message
from .scope import Scope

if TYPE_CHECKING:
    from .facade import Isolation

__all__ = [
    "DEFAULT_SYSTEM",
    "UNKNOWN_PREFERENCE",
    "Agent",
    "DemoAgent",
    "Fact",
    "Turn",
    "as_agent",
    "load_agent",
    "parse_fact",
    "recall",
    "remember",
    "reply_text",
    "system_prompt",
]

# Moved to the adapters (the core imports no framework); the old names still resolve.
_MOVED = {"LangChainAgent": registry.LANGCHAIN, "LlamaIndexAgent": registry.LLAMAINDEX}

UNKNOWN_PREFERENCE = "I don't know your preference yet."
HELP = (
    'Hello! Tell me something to remember ("Remember I like Python") '
    'and ask me about it later ("What language do I like?").'
)
DEFAULT_SYSTEM = "You are a helpful assistant. Answer briefly."


@dataclass(frozen=True)
class Turn:
    """One chat turn: who it is for (with the session), the message, the history so far.

    The agent gets handles bound to this user and session, never the ``Isolation`` it was
    built from: ``memories`` (the user's persistent memory; new ones are stamped with this
    session) and ``messages`` (this session's messages). Neither takes a scope, so an
    agent (a model's tool call, a prompt injection) cannot name another user or run
    tenant-wide maintenance through what it was given.
    """

    isolation: InitVar[Isolation]
    scope: Scope
    message: str
    history: Sequence[Message] = ()
    memories: UserMemories = field(init=False, repr=False, compare=False)
    messages: SessionMessages = field(init=False, repr=False, compare=False)

    def __post_init__(self, isolation: Isolation) -> None:
        scope = policy.require_scope(self.scope, session=True)
        backend, embed = isolation.backend, isolation.embed
        # frozen: set once here, the only place these are made
        object.__setattr__(self, "memories", UserMemories(backend, scope, embed))
        object.__setattr__(self, "messages", SessionMessages(backend, isolation.sessions, scope))


@runtime_checkable
class Agent(Protocol):
    """What the server calls for each chat turn."""

    async def respond(self, turn: Turn) -> str: ...


# -- what the demo understands ------------------------------------------------------------

_TAIL = r"\s*[.!?]*\s*$"
_REMEMBER = r"^\s*(?:please\s+)?remember(?:\s+that)?,?\s+"
_LIKE = r"(?:like|love|prefer|enjoy)"
_TOPIC = r"(?P<topic>[^\W\d_][\w ]{0,39}?)"
_TELL_PREFERENCE = re.compile(
    _REMEMBER + r"i\s+(?:really\s+)?" + _LIKE + r"\s+(?P<value>.+?)" + _TAIL, re.I
)
_TELL_FACT = re.compile(_REMEMBER + r"my\s+" + _TOPIC + r"\s+is\s+(?P<value>.+?)" + _TAIL, re.I)
_ASK_PREFERENCE = re.compile(
    r"^\s*(?:what|which)\s+(?:" + _TOPIC + r"\s+)?do\s+i\s+" + _LIKE + _TAIL, re.I
)
_ASK_FACT = re.compile(r"^\s*what(?:'s|\s+is)\s+my\s+" + _TOPIC + _TAIL, re.I)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#]*")
_LANGUAGES = frozenset(
    {
        "python",
        "rust",
        "go",
        "golang",
        "java",
        "javascript",
        "typescript",
        "c",
        "c++",
        "c#",
        "ruby",
        "kotlin",
        "swift",
        "haskell",
        "scala",
        "elixir",
        "erlang",
        "php",
        "perl",
        "lua",
        "julia",
        "r",
        "zig",
        "ocaml",
        "clojure",
        "dart",
        "f#",
        "sql",
    }
)
_TOPIC_ALIASES = {
    "languages": "language",
    "programming language": "language",
    "programming languages": "language",
}


@dataclass(frozen=True)
class Fact:
    """Something a user told or asked: a preference or a "my X is Y" fact, on a topic."""

    kind: str
    topic: str | None
    value: str | None = None

    @property
    def content(self) -> str:
        if self.kind == "preference":
            return f"I like {self.value}"
        return f"My {self.topic} is {self.value}"

    def filter(self) -> dict[str, str]:
        spec = {"kind": self.kind}
        if self.topic is not None:
            spec["topic"] = self.topic
        return spec


def _topic(text: str) -> str:
    topic = " ".join(text.lower().split())
    return _TOPIC_ALIASES.get(topic, topic)


def _preference_topic(value: str) -> str:
    words = {w.lower() for w in _WORD.findall(value)}
    return "language" if words & _LANGUAGES else "general"


def parse_fact(message: str) -> tuple[str, Fact] | None:
    """``("tell", fact)`` or ``("ask", fact)`` for the sentences the demo knows, else None."""
    if m := _TELL_PREFERENCE.match(message):
        value = m["value"]
        return "tell", Fact("preference", _preference_topic(value), value)
    if m := _TELL_FACT.match(message):
        return "tell", Fact("fact", _topic(m["topic"]), m["value"])
    if m := _ASK_PREFERENCE.match(message):
        return "ask", Fact("preference", _topic(m["topic"]) if m["topic"] else None)
    if m := _ASK_FACT.match(message):
        return "ask", Fact("fact", _topic(m["topic"]))
    return None


def _join(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _distinct(values: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return list(seen.values())


# -- memory, always through the turn's scope ------------------------------------------------


async def remember(turn: Turn, fact: Fact) -> Memory:
    """Store ``fact`` in the turn's user's persistent memory (made in this session)."""
    metadata = {"kind": fact.kind, "topic": fact.topic, "value": fact.value}
    memory_id = await turn.memories.aadd(fact.content, metadata)
    return (await turn.memories.aget([memory_id]))[0]


async def recall(turn: Turn, fact: Fact | None = None) -> list[Memory]:
    """The turn's user's memories matching ``fact``'s kind and topic (all if None)."""
    return await turn.memories.alist(filter=None if fact is None else fact.filter())


class DemoAgent:
    """Remembers preferences and facts per user, answers from them; no model, no network."""

    async def respond(self, turn: Turn) -> str:
        parsed = parse_fact(turn.message)
        if parsed is None:
            return HELP
        action, fact = parsed
        if action == "tell":
            await remember(turn, fact)
            if fact.kind == "preference":
                return f"Got it. I'll remember that you like {fact.value}."
            return f"Got it. I'll remember that your {fact.topic} is {fact.value}."
        found = [str(m.metadata.get("value")) for m in await recall(turn, fact)]
        if fact.kind == "preference":
            return f"You like {_join(_distinct(found))}." if found else UNKNOWN_PREFERENCE
        if not found:
            return f"I don't know your {fact.topic} yet."
        return f"Your {fact.topic} is {found[-1]}."


# -- real models ----------------------------------------------------------------------------


def reply_text(content: Any) -> str:
    """The text of a model's reply: a string, or the text blocks of a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block if isinstance(block, str) else str(block.get("text", ""))
            for block in content
            if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")
        ]
        return "".join(parts)
    return "" if content is None else str(content)


async def system_prompt(turn: Turn, system: str, keep: bool) -> str:
    """Store a "Remember ..." sentence if ``keep``; the system prompt with the user's memory."""
    parsed = parse_fact(turn.message)
    if keep and parsed is not None and parsed[0] == "tell":
        await remember(turn, parsed[1])
    memories = await recall(turn)
    if not memories:
        return system
    known = "\n".join(f"- {m.content}" for m in memories)
    return f"{system}\n\nWhat this user told you in earlier conversations:\n{known}"


def as_agent(obj: Any) -> Agent:
    """``obj`` as an ``Agent``: itself if it has ``respond``, else the agent class an adapter
    registered for its framework (``muxi_isolation.registry``)."""
    if isinstance(obj, Agent):
        return obj
    for adapter in registry.agent_adapters():
        if adapter.serves(obj):
            made: Agent = adapter.make(obj)
            return made
    raise ConfigError(
        f"{type(obj).__name__} is not an agent: give an object with async respond(turn), "
        "a LangChain chat model or agent graph, or a LlamaIndex LLM"
    )


def load_agent(spec: str | None) -> Agent:
    """The agent a setting names: ``demo`` (or empty), or ``module:attribute``.

    The attribute may be an agent, a model, or a class or function called with no
    arguments to make one.
    """
    if not spec or spec == "demo":
        return DemoAgent()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"agent must be 'demo' or 'module:attribute', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        obj = obj()
    return as_agent(obj)


def __getattr__(name: str) -> Any:
    """``LangChainAgent`` / ``LlamaIndexAgent`` from their adapters, with a warning."""
    framework = _MOVED.get(name)
    if framework is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    adapter = f"muxi_isolation.adapters.{framework.extra}"
    warnings.warn(
        f"muxi_isolation.agent.{name} moved: import it from {adapter}",
        DeprecationWarning,
        stacklevel=2,
    )
    registry.load(framework)
    return next(a.make for a in registry.agent_adapters() if a.framework == framework)
