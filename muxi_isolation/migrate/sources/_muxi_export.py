"""Our own JSON Lines export (``_export``) as an import source: the round trip back.

The file is read twice: once to check every line (the format and version, each record's
fields, messages grouped by session with distinct seqs, record types with no registered
section, and the closing ``end`` line with its counts, so a truncated file is refused), then
to yield its units. Memory stays bounded by one session's messages.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from ...errors import IsolationError, UnreadableSource
from ...records import Message, SessionRecord
from ...scope import Scope
from .._codec import memory_from_json, message_from_json, session_from_json
from .._export import CORE_TYPES, END, EXPORT_FORMAT, EXPORT_VERSION, SECTIONS, Section
from .._units import Conversation, Extra, MemoryItem, Source, Unit

__all__ = ["MuxiExport"]


class MuxiExport(Source):
    """A ``muxi-isolation export-user`` file. Its units are keyed by the exported user's
    ``X-Muxi-User-Id`` (``tenant_a:user_1``): map that key to itself to restore the same
    user, or to another owner to restore the data as someone else's."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"muxi-export {self.path}"
        self.owner: Scope | None = None

    def _lines(self) -> Generator[tuple[int, dict[str, Any]], None, None]:
        try:
            with self.path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UnreadableSource(f"{self.path}:{number}: not JSON: {exc}") from exc
                    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                        raise UnreadableSource(f"{self.path}:{number}: not a typed record")
                    yield number, record
        except FileNotFoundError as exc:
            raise UnreadableSource(f"no such file: {self.path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise UnreadableSource(f"cannot read {self.path}: {exc}") from exc

    def check(self) -> int:
        types = {t: s for s in SECTIONS for t in s.types}
        counts: Counter[str] = Counter()
        sessions: set[str] = set()
        self.owner = None
        lines = self._lines()
        with closing(lines):
            ended = self._check_lines(lines, types, counts, sessions)
        if self.owner is None:
            raise UnreadableSource(f"{self.path} is empty")
        if not ended:
            raise UnreadableSource(f"{self.path} ends without its end line: truncated?")
        return len(sessions) + counts["memory"] + sum(counts[t] for t in types)

    def _check_lines(
        self,
        lines: Iterator[tuple[int, dict[str, Any]]],
        types: dict[str, Section],
        counts: Counter[str],
        sessions: set[str],
    ) -> bool:
        finished: set[str] = set()
        current: str | None = None
        seqs: set[int] = set()
        ended = False
        for number, record in lines:
            where = f"{self.path}:{number}"
            kind = record["type"]
            try:
                if self.owner is None:
                    self.owner = self._header(record)
                    continue
                if ended:
                    raise UnreadableSource("records after the end line")
                if record.get("v") != EXPORT_VERSION:
                    raise UnreadableSource(f"format version {record.get('v')!r} is not supported")
                if kind == "session":
                    if counts["message"]:
                        raise UnreadableSource("session records must come before messages")
                    sessions.add(session_from_json(record, self.owner).id)
                elif kind == "message":
                    sid, message = message_from_json(record)
                    sessions.add(sid)
                    if sid != current:
                        if sid in finished:
                            raise UnreadableSource(f"messages of session {sid!r} are not together")
                        if current is not None:
                            finished.add(current)
                        current, seqs = sid, set()
                    if message.seq in seqs or message.seq is None or message.seq < 1:
                        raise UnreadableSource(f"seq {message.seq!r} is repeated or not positive")
                    seqs.add(message.seq)
                elif kind == "memory":
                    memory_from_json(record)
                elif kind == END:
                    expected = record.get("counts")
                    if expected != dict(counts):
                        found = dict(counts)
                        raise UnreadableSource(f"the end line counts {expected}, the file {found}")
                    ended = True
                    continue
                elif kind in types:
                    types[kind].validate(record)
                else:
                    raise UnreadableSource(
                        f"record type {kind!r} needs an export section that is not registered "
                        "(is the adapter that wrote it installed?)"
                    )
            except UnreadableSource as exc:
                raise UnreadableSource(f"{where}: {exc}") from exc
            except IsolationError as exc:  # an id that breaks the canonical form
                raise UnreadableSource(f"{where}: {exc}") from exc
            counts[kind] += 1
        return ended

    def _header(self, record: dict[str, Any]) -> Scope:
        if record.get("type") != EXPORT_FORMAT:
            first = record.get("type")
            raise UnreadableSource(f"not a muxi-isolation export (first line: {first!r})")
        version = record.get("v")
        if not isinstance(version, int) or not 1 <= version <= EXPORT_VERSION:
            raise UnreadableSource(f"export format version {version!r} is not supported")
        return Scope(record.get("tenant_id"), record.get("user_id"))  # type: ignore[arg-type]

    def units(self) -> Generator[Unit, None, None]:
        assert self.owner is not None, "check() first"
        key = self.owner.header
        records: dict[str, SessionRecord] = {}
        current: str | None = None
        messages: list[Message] = []

        def conversation() -> Conversation:
            assert current is not None
            record = records.pop(current, None)
            return Conversation(key, messages, current, record, with_record=record is not None)

        for _, record in self._lines():
            kind = record["type"]
            if kind == "session":
                session = session_from_json(record, self.owner)
                records[session.id] = session
            elif kind == "message":
                sid, message = message_from_json(record)
                if sid != current:
                    if current is not None:
                        yield conversation()
                    current, messages = sid, []
                messages.append(message)
            elif kind == "memory":
                where, memory = memory_from_json(record)
                yield MemoryItem(key, memory, where)
            elif kind not in CORE_TYPES and kind not in (EXPORT_FORMAT, END):
                yield Extra(key, kind, {k: v for k, v in record.items() if k != "v"})
        if current is not None:
            yield conversation()
        for sid, session in records.items():  # sessions without messages
            yield Conversation(key, [], sid, session)
