"""What a source yields: whole conversations, single memories, or a record it could not read.

A source knows its own keys but not who owns them; the import maps each unit's ``key`` to a
Scope and writes it. A conversation is written in one transaction, so a unit is the grain
of idempotence: a rerun finds it already there, unchanged, and moves on.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .._closing import Closing
from ..records import Memory, Message, SessionRecord

__all__ = ["Broken", "Conversation", "Extra", "MemoryItem", "Source", "Unit"]


@dataclass(frozen=True)
class Conversation:
    """One source conversation, oldest message first.

    ``session_id`` is the source's own session id when it has one apart from the key (an
    export); ``session`` the exact record to create (an export), else one is made at import
    time. ``with_record=False`` restores messages that had no session record.
    Messages with ``seq`` keep it; without, they are numbered from 1.
    """

    key: str
    messages: list[Message]
    session_id: str | None = None
    session: SessionRecord | None = None
    with_record: bool = True

    @property
    def ref(self) -> str:
        return self.key if self.session_id is None else f"{self.key} / {self.session_id}"


@dataclass(frozen=True)
class MemoryItem:
    """One memory, with its stored embedding (never recomputed) and where it was made."""

    key: str
    memory: Memory
    session_id: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.key} / {self.memory.id}"


@dataclass(frozen=True)
class Extra:
    """A record of a registered export section (see ``_export.Section``)."""

    key: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.key} / {self.type}"


@dataclass(frozen=True)
class Broken:
    """A source record that cannot be turned into ours; reported, never written."""

    key: str
    reason: str

    @property
    def ref(self) -> str:
        return self.key


Unit: TypeAlias = "Conversation | MemoryItem | Extra | Broken"


class Source(Closing):
    """A place to import from. ``check`` reads enough to know the whole source is usable
    (raising ``UnreadableSource`` otherwise) before ``units`` yields anything to write."""

    name = "source"

    def check(self) -> int | None:
        """Raise ``UnreadableSource`` if the source cannot be read; the unit count if known."""
        raise NotImplementedError("check")

    def units(self) -> Generator[Unit, None, None]:
        """The units, read as they are needed; ``close()`` on the generator stops reading."""
        raise NotImplementedError("units")

    def close(self) -> None:
        """Release connections or files. Safe to call twice."""
