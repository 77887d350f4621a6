"""Run an import: map each unit of a source to its owner and write it, idempotently.

- **Source first.** ``source.check()`` must pass before anything is written, so a missing
  table or a damaged file stops the import with ``UnreadableSource`` and an empty target.
- **One owner per unit, or none.** The mapping decides (``_scopemap``); a key it skips is
  counted, a key it cannot map (an invalid id, an exception) is an error for that unit
  alone. Nothing is ever written for a default user instead.
- **Idempotent, so resumable.** A conversation is restored whole in one transaction, with
  its messages numbered as in the source; memories keep their source ids. A unit the
  target already holds exactly as the source has it is counted ``unchanged`` and left
  alone, so a second run, or a run after an interruption, ends where one clean run ends.
  A unit the target holds *differently* (the app wrote to it since) is a conflict, left
  alone unless ``replace=True``.
- **Dry run** does every read and every check and writes nothing.
- Stored embeddings are reused as they are: nothing is embedded again.
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import replace
from datetime import timedelta

from .. import policy
from .. import policy_foreign as foreign
from ..audit import OK, probing
from ..errors import InvalidInput, IsolationError, ScopeViolation, StorageError
from ..records import Memory, Message, SessionRecord
from ..scope import Scope, canonical_id
from ..sessions import DEFAULT_TIMEOUT, Clock, utc_now
from ..stores.base import Backend
from ._export import SECTIONS
from ._progress import Progress
from ._report import ImportReport, Problem
from ._scopemap import ScopeMap, Skip, scope_mapper
from ._units import Broken, Conversation, Extra, MemoryItem, Source

__all__ = ["run_import"]

_REFUSED = (IsolationError, ValueError, TypeError)  # a record the target will not take


def run_import(
    source: Source,
    backend: Backend,
    mapping: ScopeMap,
    *,
    dry_run: bool = False,
    replace: bool = False,
    progress: bool | None = False,
    session_timeout: float = DEFAULT_TIMEOUT,
    clock: Clock = utc_now,
    batch: int = 500,
) -> ImportReport:
    """Import ``source`` into ``backend``; the report of what was (or would be) written.

    Args:
        mapping: from a source key to its owner (a template, a mapping or a callable).
        dry_run: read and check everything, write nothing.
        replace: overwrite units the target holds differently (default: report conflicts).
        progress: show progress on stderr (``None``: when stderr is a terminal).
        session_timeout: the expiry of session records made for imported conversations,
            from the time of the import.

    Raises:
        UnreadableSource: the source cannot be read; nothing was written.
        ConfigError: the mapping itself is malformed (a bad template).
    """
    to_scope = scope_mapper(mapping)
    report = ImportReport(source.name, dry_run)
    with source, probing():  # comparing with what is stored: its misses are no answer
        total = source.check()
        writer = _Writer(backend, report, dry_run, replace, session_timeout, clock, batch)
        units = source.units()
        with closing(units), Progress(total, f"import {source.name}", enabled=progress) as bar:
            for unit in units:
                bar.update()
                if isinstance(unit, Broken):
                    report.errors.append(Problem(unit.ref, unit.reason))
                    continue
                try:
                    scope = to_scope(unit.key)
                except Skip as exc:
                    report.skipped.append(Problem(unit.ref, str(exc)))
                    continue
                except Exception as exc:  # the caller's mapping: any failure stops this unit
                    report.errors.append(Problem(unit.ref, f"no valid owner: {_why(exc)}"))
                    continue
                writer.take(unit, scope)
            writer.flush()
    if not dry_run:  # an admin act: one event naming the source (each user's is below it)
        backend.audit.record("import", OK, None, [source.name])
    return report


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _close(a: list[float] | None, b: list[float] | None) -> bool:
    """Equal embeddings, within what a float32 column keeps."""
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b, strict=True)
    )


def _same_message(stored: Message, wanted: Message) -> bool:
    return (
        (stored.seq, stored.role, stored.status) == (wanted.seq, wanted.role, wanted.status)
        and stored.content == wanted.content
        and stored.metadata == wanted.metadata
        and stored.tool_calls == wanted.tool_calls
        and (wanted.created_at is None or stored.created_at == wanted.created_at)
    )


def _same_memory(stored: Memory, wanted: Memory, session_id: str | None) -> bool:
    where = None if stored.scope is None else stored.scope.session_id
    return (
        stored.content == wanted.content
        and stored.metadata == wanted.metadata
        and _close(stored.embedding, wanted.embedding)
        and where == session_id
        and (wanted.created_at is None or stored.created_at == wanted.created_at)
    )


def _numbered(messages: list[Message]) -> list[Message]:
    if all(m.seq is None for m in messages):
        return [replace(m, seq=i, scope=None) for i, m in enumerate(messages, start=1)]
    return [replace(m, scope=None) for m in messages]


class _Writer:
    def __init__(
        self,
        backend: Backend,
        report: ImportReport,
        dry_run: bool,
        replace: bool,
        session_timeout: float,
        clock: Clock,
        batch: int,
    ) -> None:
        self.backend, self.report = backend, report
        self.dry_run, self.replace = dry_run, replace
        self.timeout, self.clock, self.batch = session_timeout, clock, batch
        self.claimed: dict[Scope, str] = {}
        self.seen: set[tuple[Scope, str]] = set()
        self.pending: dict[Scope, dict[str, tuple[MemoryItem, Memory, str | None]]] = {}
        self.size = 0
        self.sections = {t: s for s in SECTIONS for t in s.types}

    def take(self, unit: Conversation | MemoryItem | Extra, scope: Scope) -> None:
        try:
            if isinstance(unit, Conversation):
                self.conversation(unit, scope)
            elif isinstance(unit, MemoryItem):
                self.memory(unit, scope)
            else:
                self.section_record(unit, scope)
        except StorageError:
            raise  # the target failed: stop, a rerun resumes
        except _REFUSED as exc:
            self.report.errors.append(Problem(unit.ref, _why(exc)))

    # -- conversations

    def conversation(self, unit: Conversation, scope: Scope) -> None:
        user = scope.user()
        sid = scope.session_id or unit.session_id or canonical_id(unit.key, "session_id")
        target = user.with_session(sid)
        if target in self.claimed:
            other = self.claimed[target]
            raise ScopeViolation(f"session {sid!r} of {user.header} is also {other!r}'s target")
        self.claimed[target] = unit.ref
        wanted = _numbered(unit.messages)
        for m in wanted:
            policy.check_metadata(m.metadata)
        existing = self.backend.get_messages(target)
        record = self.backend.get_session(user, sid)
        write = bool(wanted)
        if existing:
            same = len(existing) == len(wanted) and all(
                _same_message(a, b) for a, b in zip(existing, wanted, strict=True)
            )
            if same:
                write = False
            elif not self.replace:
                self.report.conflicts.append(
                    Problem(unit.ref, f"{target} already holds other messages")
                )
                return
        create = unit.with_record and record is None
        if not self.dry_run:
            if create:
                self.backend.insert_session(user, self._record(unit, user, sid, wanted))
            if write:
                self.backend.restore_messages(target, wanted)
        owner = user.header
        self.report.add(owner, "sessions", int(create))
        self.report.add(owner, "messages", len(wanted) if write else 0)
        if not create and not write:
            self.report.unchanged += 1

    def _record(
        self, unit: Conversation, user: Scope, sid: str, messages: list[Message]
    ) -> SessionRecord:
        if unit.session is not None:
            return replace(unit.session, id=sid, scope=user)
        now = self.clock()
        times = [m.created_at for m in messages if m.created_at is not None]
        started = min(times, default=now)
        expires = now + timedelta(seconds=self.timeout)
        return SessionRecord(sid, user, min(started, now), now, expires)

    # -- memories: batched per owner

    def memory(self, unit: MemoryItem, scope: Scope) -> None:
        user = scope.user()
        memory = replace(
            unit.memory,
            id=foreign.own_id(user, unit.memory.id),
            metadata=foreign.claim(user, unit.memory.metadata),
            scope=None,
        )
        policy.check_metadata(memory.metadata)
        if (user, memory.id) in self.seen:
            raise ScopeViolation(f"memory {memory.id!r} of {user.header} appears twice")
        self.seen.add((user, memory.id))
        where = scope.session_id or unit.session_id
        mine = self.pending.setdefault(user, {})
        mine[memory.id] = (unit, memory, where)
        self.size += 1
        if len(mine) >= self.batch:  # a full batch of one owner: one transaction
            self.size -= len(mine)
            self._flush_user(user, self.pending.pop(user))
        elif self.size >= 10 * self.batch:  # many owners, a few each: bound the memory held
            self.flush()

    def flush(self) -> None:
        pending, self.pending, self.size = self.pending, {}, 0
        for user, items in pending.items():
            self._flush_user(user, items)

    def _flush_user(
        self, user: Scope, items: dict[str, tuple[MemoryItem, Memory, str | None]]
    ) -> None:
        stored = {m.id: m for m in self.backend.get_memories(user, list(items))}
        fresh: list[tuple[MemoryItem, Memory, str | None]] = []
        for unit, memory, where in items.values():
            old = stored.get(memory.id)
            if old is not None and _same_memory(old, memory, where):
                self.report.unchanged += 1
            elif old is not None and not self.replace:
                why = f"{user.header} already holds another memory {memory.id!r}"
                self.report.conflicts.append(Problem(unit.ref, why))
            else:
                fresh.append((unit, memory, where))
        self._write_memories(user, fresh)

    def _write_memories(
        self, user: Scope, items: list[tuple[MemoryItem, Memory, str | None]]
    ) -> None:
        by_session: dict[str | None, list[tuple[MemoryItem, Memory]]] = {}
        for unit, memory, where in items:
            by_session.setdefault(where, []).append((unit, memory))
        for where, group in by_session.items():
            scope = user if where is None else user.with_session(where)
            try:
                if not self.dry_run:
                    self.backend.upsert_memories(scope, [m for _, m in group])
                self.report.add(user.header, "memories", len(group))
            except StorageError:
                raise
            except _REFUSED:
                for unit, memory in group:  # find the ones the target refuses
                    try:
                        self.backend.upsert_memories(scope, [memory])
                        self.report.add(user.header, "memories")
                    except StorageError:
                        raise
                    except _REFUSED as exc:
                        self.report.errors.append(Problem(unit.ref, _why(exc)))

    # -- records of registered sections

    def section_record(self, unit: Extra, scope: Scope) -> None:
        section = self.sections.get(unit.type)
        if section is None:
            raise InvalidInput(f"no section restores {unit.type!r} records", field="type")
        counts = section.restore(self.backend, scope.user(), unit.data, self.dry_run)
        for kind, n in counts.items():
            self.report.add(scope.user().header, kind, n)
        if not any(counts.values()):
            self.report.unchanged += 1
