"""From a source's key to a Scope: the one decision an import cannot make for you.

A store that knows nothing of users keys its data some other way (a session key such as
``"tenant_a:user_1:chat42"``, a UUID, a collection name, a metadata field). The caller says
who owns each key, in one of three forms:

- a **template**: ``"{tenant}:{user}:{session}"`` matches the whole key and takes the ids
  from it (``{tenant}``, ``{user}``, ``{session}``; ``{*}`` matches and ignores a part).
  Without ``{tenant}`` the user is in the default tenant; a template with no field at all
  (``"tenant_a:user_1"``) sends every key to that one user;
- a **mapping** of key to owner (keys it does not list are skipped, not guessed);
- a **callable** taking the key and returning the owner, or ``None`` to skip the key.

An owner is a ``Scope``, an ``X-Muxi-User-Id`` string (``"tenant_a:user_1"``) or a dict
with ``tenant``, ``user`` and optionally ``session``. Whatever the form, the result goes
through ``Scope``'s validation: an invalid id, or a mapping that raises, stops that key
with an error naming it. Nothing is ever written for a default user instead.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yaml  # type: ignore[import-untyped]

from ..errors import ConfigError, InvalidIdentifier
from ..scope import Scope

__all__ = ["Owner", "ScopeMap", "Skip", "load_mapping", "scope_mapper", "to_scope"]

Owner: TypeAlias = "Scope | str | Mapping[str, Any] | None"
ScopeMap: TypeAlias = "str | Mapping[str, Owner] | Callable[[str], Owner]"

_FIELD = re.compile(r"\{(tenant|user|session|\*)\}")
_ALIASES = {"tenant": "tenant_id", "user": "user_id", "session": "session_id"}


class Skip(Exception):
    """The mapping does not name an owner for this key: it is skipped, and counted."""


def to_scope(owner: Owner) -> Scope:
    """A validated Scope from what a mapping returned; ``None`` raises ``Skip``."""
    if owner is None:
        raise Skip("the mapping names no owner")
    if isinstance(owner, Scope):
        return owner
    if isinstance(owner, str):
        return Scope.parse(owner)
    if isinstance(owner, Mapping):
        fields = {_ALIASES.get(k, k): v for k, v in owner.items()}
        unknown = set(fields) - set(_ALIASES.values())
        if unknown:
            raise InvalidIdentifier("scope", f"unknown fields {sorted(unknown)}")
        if "user_id" not in fields:
            raise InvalidIdentifier("user_id", "is required")
        return Scope(**fields)
    raise InvalidIdentifier("scope", f"a mapping returned a {type(owner).__name__}")


def _template(template: str) -> Callable[[str], Owner]:
    parts = _FIELD.split(template)
    literals, fields = parts[0::2], parts[1::2]
    named = [f for f in fields if f != "*"]
    if len(named) != len(set(named)):
        raise ConfigError(f"a field appears twice in the template {template!r}")
    if "{" in "".join(literals) or "}" in "".join(literals):
        raise ConfigError(
            f"unknown field in the template {template!r}: use {{tenant}}, {{user}}, "
            "{session} or {*}"
        )
    if not fields:
        owner = Scope.parse(template)  # a constant owner, checked now
        return lambda key: owner
    if "user" not in fields:
        raise ConfigError(f"the template {template!r} needs a {{user}} field")
    pattern = re.escape(literals[0])
    for i, (name, literal) in enumerate(zip(fields, literals[1:], strict=True)):
        lazy = "" if i == len(fields) - 1 else "?"
        group = ".+" + lazy if name == "*" else f"(?P<{name}>.+{lazy})"
        pattern += group + re.escape(literal)
    compiled = re.compile(pattern, re.DOTALL)

    def owner_of(key: str) -> Owner:
        match = compiled.fullmatch(key)
        if match is None:
            raise InvalidIdentifier("key", f"does not match the template {template!r}")
        return {k: v for k, v in match.groupdict().items()}

    return owner_of


def scope_mapper(spec: ScopeMap) -> Callable[[str], Scope]:
    """One function from a key to its Scope; raises ``Skip`` or the mapping's error."""
    owner_of: Callable[[str], Owner]
    if isinstance(spec, str):
        owner_of = _template(spec)
    elif isinstance(spec, Mapping):
        table = dict(spec)

        def owner_of(key: str) -> Owner:
            if key not in table:
                raise Skip("not in the mapping")
            return table[key]

    elif callable(spec):
        owner_of = spec
    else:
        raise ConfigError("a scope mapping is a template string, a mapping or a callable")
    return lambda key: to_scope(owner_of(key))


def load_mapping(
    *, template: str | None = None, file: str | Path | None = None, python: str | None = None
) -> ScopeMap | None:
    """The mapping the CLI was given: a template, a JSON/YAML file of key -> owner, or
    ``module:attribute`` naming a callable (or a mapping). ``None`` if none was given."""
    given = [x for x in (template, file, python) if x is not None]
    if len(given) > 1:
        raise ConfigError("give one of --map, --map-file and --map-python")
    if template is not None:
        scope_mapper(template)  # a malformed template fails now
        return template
    if file is not None:
        try:
            data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the mapping file {file}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"the mapping file {file} must hold a mapping of key -> owner")
        return {str(k): v for k, v in data.items()}
    if python is not None:
        module, _, attribute = python.partition(":")
        try:
            found = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load the mapping {python!r}: {exc}") from exc
        if not callable(found) and not isinstance(found, Mapping):
            raise ConfigError(f"{python!r} is neither a callable nor a mapping")
        return found  # type: ignore[no-any-return]
    return None
