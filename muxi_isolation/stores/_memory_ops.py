"""Memories: one user's, read at the user level, each operation one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import policy
from ..filters import Filter
from ..records import Memory
from ..scope import Scope
from ._checks import (
    FilterSpec,
    Scored,
    caller_delete_filter,
    caller_filter,
    check_ids,
    check_memory,
    check_window,
    ranked,
    search_plan,
)
from .operations import Context, Operation, Plan, UserOperation, Verified, perform


@dataclass(frozen=True)
class UpsertMemories(Operation[list[str]]):
    """Insert, or replace this user's memories with the same ids, in one transaction."""

    name = "upsert_memories"
    level = "user"
    write = True
    audit_ids = "memories"
    scope: Scope
    memories: tuple[Memory, ...]

    @classmethod
    def prepare(cls, scope: Scope, memories: Sequence[Memory]) -> UpsertMemories:
        scope = policy.require_scope(scope)
        return cls(scope, tuple(policy.stamp(scope, check_memory(m)) for m in memories))

    def args(self) -> tuple[object, ...]:
        return self.scope, list(self.memories)

    def plan(self, backend: Context) -> Plan[list[str]]:
        if not self.memories:
            return []
        ids: list[str] = yield from perform(backend, self)
        return ids


@dataclass(frozen=True)
class GetMemories(UserOperation[list[Memory]], Verified[Memory]):
    """This user's memories among ``ids``; another user's id is simply missing."""

    name = "get_memories"
    audit_ids = "ids"
    ids: list[str]

    @classmethod
    def prepare(cls, scope: Scope, ids: Sequence[str]) -> GetMemories:
        return cls(cls.owner(scope), check_ids(ids) if ids else [])

    def plan(self, backend: Context) -> Plan[list[Memory]]:
        if not self.ids:
            return []
        return (yield from super().plan(backend))


@dataclass(frozen=True)
class ListMemories(UserOperation[list[Memory]], Verified[Memory]):
    """This user's memories, oldest first (then by id)."""

    name = "list_memories"
    node: Filter | None
    limit: int | None
    offset: int | None

    @classmethod
    def prepare(
        cls,
        scope: Scope,
        *,
        filter: FilterSpec = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> ListMemories:
        user = cls.owner(scope)
        check_window(limit, offset, None)
        return cls(user, caller_filter(filter), limit, offset)


@dataclass(frozen=True)
class CountMemories(UserOperation[int]):
    """How many memories this user holds (matching ``filter``)."""

    name = "count_memories"
    node: Filter | None

    @classmethod
    def prepare(cls, scope: Scope, *, filter: FilterSpec = None) -> CountMemories:
        return cls(cls.owner(scope), caller_filter(filter))


@dataclass(frozen=True)
class DeleteMemories(UserOperation[int]):
    """Delete this user's memories by id and/or filter; neither means all of them (a
    filter that matches everything is refused: ``InvalidFilter``)."""

    name = "delete_memories"
    write = True
    audit_ids = "ids"
    ids: list[str] | None
    node: Filter | None

    @classmethod
    def prepare(
        cls, scope: Scope, *, ids: Sequence[str] | None = None, filter: FilterSpec = None
    ) -> DeleteMemories:
        user = cls.owner(scope)
        node = caller_delete_filter(filter)
        return cls(user, None if ids is None else check_ids(ids), node)


@dataclass(frozen=True)
class VectorSearch(UserOperation[list[Scored]]):
    """The primitive: the ``k`` nearest of this user's memories to ``vector``."""

    name = "search_memories"
    vector: list[float]
    k: int
    node: Filter | None


@dataclass(frozen=True)
class TextSearch(UserOperation[list[Scored]]):
    """The primitive: this user's top ``k`` memories by keyword score for ``query``."""

    name = "search_text"
    query: str
    k: int
    node: Filter | None


@dataclass(frozen=True)
class SearchMemories(UserOperation[list[Scored]]):
    """The ``k`` memories most similar to ``embedding``, with cosine similarity.

    Always ``min(k, matching memories with an embedding)`` results, best first.

    ``mode="text"``: ranked by ``text``'s words alone (full-text search; ``embedding``
    may be ``None``), the backend's keyword score. ``mode="hybrid"``: the vector ranking
    and the top ``text_k`` (default ``k``) of the keyword ranking fused by reciprocal
    rank, ``alpha`` weighting the vector side (1: vector only, 0: keywords only); the
    fused score; ``min(k, memories matching either)`` results. ``filter`` applies to both.
    """

    name = "search_memories"
    scope: Scope  # the caller's, which the results are verified against
    by_vector: VectorSearch | None
    by_text: TextSearch | None
    k: int
    mode: str
    alpha: float

    @classmethod
    def prepare(
        cls,
        scope: Scope,
        embedding: Sequence[float] | None,
        k: int = 4,
        *,
        filter: FilterSpec = None,
        text: str | None = None,
        mode: str = "vector",
        alpha: float = 0.5,
        text_k: int | None = None,
    ) -> SearchMemories:
        user = cls.owner(scope)
        vector, query, depth = search_plan(embedding, text, mode, alpha, k, text_k)
        node = caller_filter(filter)
        by_vector = None if vector is None else VectorSearch(user, vector, k, node)
        by_text = None if query is None else TextSearch(user, query, depth, node)
        return cls(scope, by_vector, by_text, k, mode, alpha)

    def plan(self, backend: Context) -> Plan[list[Scored]]:
        by_vector = [] if self.by_vector is None else (yield from perform(backend, self.by_vector))
        by_text = [] if self.by_text is None else (yield from perform(backend, self.by_text))
        return ranked(self.scope, self.mode, by_vector, by_text, self.k, self.alpha)
