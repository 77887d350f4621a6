"""The input checks every storage operation makes before its backend is called.

Every one raises ``InvalidInput`` (a ``ValueError``), so memory, SQLite and PostgreSQL
refuse the same values the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias

from .. import policy
from .._input import INT64_MAX, check_int, check_text
from ..errors import InvalidIdentifier, InvalidInput
from ..filters import And, Compare, Filter, Not, Or, check_filter
from ..records import Memory, Message, Receipt
from ..scope import Scope, canonical_id
from .keywords import fuse, words

FilterSpec: TypeAlias = "Mapping[str, Any] | Filter | None"
Scored: TypeAlias = "tuple[Memory, float]"
Counts: TypeAlias = "dict[str, int]"
RECEIPT_WINDOW = timedelta(hours=24)  # how long a retry with the same key is a replay
SEARCH_MODES = ("vector", "text", "hybrid")


def check_window(limit: int | None, offset: int | None, last: int | None) -> None:
    for name, value in (("limit", limit), ("offset", offset), ("last", last)):
        if value is not None:
            check_int(value, name, minimum=0)  # 64 bits: what SQLite and PostgreSQL bind
    if last is not None and (limit is not None or offset is not None):
        raise InvalidInput("last cannot be combined with limit or offset", field="last")


def check_k(k: int, name: str = "k") -> None:
    check_int(k, name, minimum=0)


def check_status(status: str | None) -> None:
    if status is not None:
        check_text(status, "status")


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str):
        raise InvalidIdentifier("session_id", f"must be a string, not {type(session_id).__name__}")
    try:
        return check_text(session_id, "session_id")
    except InvalidInput as exc:  # the id's own error, as the canonical form gives it
        raise InvalidIdentifier("session_id", str(exc).removeprefix("session_id ")) from None


def check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):  # a lone id would be read as its characters
        raise InvalidInput("ids must be a list of strings, not one string", field="ids")
    return [check_text(i, "ids") for i in ids]


def stamped_receipt(scope: Scope, receipt: Receipt | None) -> Receipt | None:
    """The receipt stamped for the user, with its time; its key in the canonical form."""
    if receipt is None:
        return None
    key = canonical_id(receipt.key, "idempotency_key")
    now = receipt.created_at or datetime.now(timezone.utc)
    return policy.stamp(scope, replace(receipt, key=key, created_at=now))


def check_message(message: Message) -> Message:
    check_text(message.role, "role")
    check_text(message.status, "status")
    return message


def check_memory(memory: Memory) -> Memory:
    check_text(memory.id, "memory id")
    check_text(memory.content, "memory content")
    if memory.embedding is not None:
        checked_vector(memory.embedding)
    return memory


def caller_filter(spec: FilterSpec) -> Filter | None:
    if isinstance(spec, (Compare, And, Or, Not)):
        spec = check_filter(spec)  # a tree built by hand gets the parser's checks
    return policy.read_filter(spec)


def caller_delete_filter(spec: FilterSpec) -> Filter | None:
    """No filter deletes everything, as documented; a filter given that matches everything
    (``{}``, an always-true tree) is a mistake, refused as in every adapter."""
    if spec is None:
        return None
    if isinstance(spec, (Compare, And, Or, Not)):
        spec = check_filter(spec)
    return policy.delete_filter(spec)


def fresh(found: list[Receipt]) -> Receipt | None:
    """A receipt still inside its window (an older one no longer replays)."""
    if not found or found[0].created_at is None:
        return None
    oldest = datetime.now(timezone.utc) - RECEIPT_WINDOW
    return found[0] if found[0].created_at >= oldest else None


def search_plan(
    embedding: Sequence[float] | None,
    text: str | None,
    mode: str,
    alpha: float,
    k: int,
    text_k: int | None,
) -> tuple[list[float] | None, str | None, int]:
    """Checked search arguments: (the vector to rank by, the text to rank by, the text
    ranking's depth); each ``None`` when the mode does not rank by it."""
    check_k(k)
    if mode not in SEARCH_MODES:
        raise InvalidInput(f"mode must be one of {', '.join(SEARCH_MODES)}", field="mode")
    if mode == "vector" and text is not None:
        raise InvalidInput("text ranks only in mode 'text' or 'hybrid'", field="text")
    if mode != "vector" and (text is None or not words(check_text(text, "text"))):
        raise InvalidInput(f"mode {mode!r} needs a text with at least one word", field="text")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InvalidInput("alpha must be a number from 0 to 1", field="alpha")
    if text_k is not None:
        check_k(text_k, "text_k")
    if mode == "text":
        return None, text, k if text_k is None else text_k
    if embedding is None:
        raise InvalidInput(f"mode {mode!r} needs an embedding", field="embedding")
    return checked_vector(embedding), text, k if text_k is None else text_k


def verify_scored(scope: Scope, hits: list[Scored]) -> list[Scored]:
    kept = {id(m) for m in policy.verify(scope, [m for m, _ in hits])}
    return [(m, s) for m, s in hits if id(m) in kept]


def ranked(
    scope: Scope, mode: str, by_vector: list[Scored], by_text: list[Scored], k: int, alpha: float
) -> list[Scored]:
    """Each ranking verified as the caller's, then the mode's answer."""
    by_vector, by_text = verify_scored(scope, by_vector), verify_scored(scope, by_text)
    if mode == "vector":
        return by_vector
    if mode == "text":
        return by_text[:k]
    return fuse(by_vector, by_text, k, float(alpha))


def canonical_tenant(tenant_id: str) -> str:
    return Scope(tenant_id).tenant_id  # the canonical form, or InvalidIdentifier


def aware(moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInput("a timezone-aware datetime is required", field="before")
    return moment


def add_counts(total: Counts, more: Counts) -> None:
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n


def check_seqs(messages: Sequence[Message]) -> list[Message]:
    seen: set[int] = set()
    for m in messages:
        seq = m.seq
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= INT64_MAX:
            raise InvalidInput("restored messages need positive 64-bit integer seqs", field="seq")
        if seq in seen:
            raise InvalidInput("restored messages need distinct seqs", field="seq")
        seen.add(seq)
    return sorted(messages, key=lambda m: m.seq or 0)


def checked_vector(embedding: Sequence[float]) -> list[float]:
    try:
        vector = list(map(float, embedding))  # map, not a generator: 3x faster on bulk loads
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput("an embedding must be a sequence of numbers", field="embedding") from exc
    if not vector:
        raise InvalidInput("an embedding must not be empty", field="embedding")
    # pgvector refuses NaN and infinity. A finite sum has finite terms (NaN and infinities
    # carry through a sum): the walk, 4x its cost, runs only when the sum is not finite.
    if not math.isfinite(sum(vector)) and not all(map(math.isfinite, vector)):
        raise InvalidInput("an embedding must hold finite numbers", field="embedding")
    return vector
