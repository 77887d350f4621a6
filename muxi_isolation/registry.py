"""What the framework adapters add to the core, registered by the adapters themselves.

The core never imports a framework, nor an adapter by name. Each adapter package, when it
is imported, registers what it brings: the agent class that serves its framework's models
(``as_agent``) and the conversions the importers use for its framework's records
(``muxi_isolation.migrate.sources``).

Who serves which framework is declared where the adapters are packaged, as entry points
of the group ``muxi_isolation.adapters`` named after the framework's top-level module
(``langchain_core = "muxi_isolation.adapters.langchain"``); a third-party adapter declares
its own. ``load`` imports the adapters of a framework on first need; a framework that is
not installed fails there with the adapter's ``AdapterUnavailable`` (the pip line).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distributions
from typing import Any

from .errors import AdapterUnavailable

__all__ = [
    "ENTRY_POINTS",
    "LANGCHAIN",
    "LLAMAINDEX",
    "AgentAdapter",
    "Framework",
    "agent_adapters",
    "conversion",
    "load",
    "register_agent",
    "register_conversion",
]

ENTRY_POINTS = "muxi_isolation.adapters"


@dataclass(frozen=True)
class Framework:
    """A framework: its top-level module, the package to install, our extra that has it."""

    module: str
    package: str
    extra: str


LANGCHAIN = Framework("langchain_core", "langchain-core", "langchain")
LLAMAINDEX = Framework("llama_index", "llama-index-core", "llamaindex")


@dataclass(frozen=True)
class AgentAdapter:
    """``make(obj)`` serves as the agent any instance of ``module.name`` (subclasses too)."""

    framework: Framework
    module: str
    name: str
    make: Callable[[Any], Any]

    def serves(self, obj: Any) -> bool:
        # A framework not in sys.modules cannot have made obj, and is not imported for it.
        base = getattr(sys.modules.get(self.module), self.name, None)
        return isinstance(base, type) and isinstance(obj, base)


_agents: dict[tuple[str, str], AgentAdapter] = {}
_conversions: dict[tuple[str, str], Callable[..., Any]] = {}
_loaded: set[str] = set()


def register_agent(
    framework: Framework, module: str, name: str, make: Callable[[Any], Any]
) -> None:
    """Serve instances of the framework's class ``module.name`` with ``make`` (a class)."""
    _agents[module, name] = AgentAdapter(framework, module, name, make)


def register_conversion(framework: Framework, name: str, convert: Callable[..., Any]) -> None:
    """A conversion the importers use for ``framework``'s records, under ``name``."""
    _conversions[framework.module, name] = convert


def load(framework: Framework) -> None:
    """Import the adapters declared for ``framework`` (once); they register on import."""
    if framework.module in _loaded:
        return
    found = _declared(framework.module)
    if not found:
        raise AdapterUnavailable(framework.package, framework.extra)
    for entry in found:
        entry.load()
    _loaded.add(framework.module)


def _declared(name: str) -> list[EntryPoint]:
    """The entry points named ``name`` in our group, from every installed distribution: not
    ``entry_points()``, which keeps only the first metadata of a name on ``sys.path`` (a
    stale ``*.egg-info`` in the working directory would hide the installed one)."""
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        for entry in dist.entry_points:
            if entry.group == ENTRY_POINTS and entry.name == name:
                found.setdefault(entry.value, entry)
    return list(found.values())


def agent_adapters(
    frameworks: tuple[Framework, ...] = (LANGCHAIN, LLAMAINDEX),
) -> list[AgentAdapter]:
    """The registered agent adapters, after loading those of every framework already imported
    (an object of a framework that is not imported cannot exist)."""
    for framework in frameworks:
        if framework.module in sys.modules and framework.module not in _loaded:
            try:
                load(framework)
            except AdapterUnavailable:
                continue  # part of the framework is missing: its objects are not served
    return list(_agents.values())


def conversion(framework: Framework, name: str) -> Callable[..., Any]:
    """The conversion ``name`` an adapter of ``framework`` registered, loading it if needed."""
    if (framework.module, name) not in _conversions:
        load(framework)
    return _conversions[framework.module, name]
