"""LangChain's ``add_texts`` signature, written once for our two vector stores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from muxi_isolation.errors import InvalidInput
from muxi_isolation.plans import Async, Sync

from .._plans import Plan, twins

__all__ = ["AddTexts", "add_texts_twins", "listed"]

S = TypeVar("S")


class AddTexts(NamedTuple):
    """One ``add_texts`` call's arguments as the caller gave them (the store checks them)."""

    texts: Iterable[str]
    metadatas: list[dict[str, Any]] | None
    ids: list[str] | None
    kwargs: dict[str, Any]


def add_texts_twins(
    batch: Callable[[S, AddTexts], Plan[list[str]]],
) -> tuple[Sync[S, ..., list[str]], Async[S, ..., list[str]]]:
    """``add_texts`` and ``aadd_texts`` for a store whose ``batch`` plan adds one call's
    texts; the pair takes ``batch``'s class and docstring."""

    def _add_texts(
        self: S,
        /,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Plan[list[str]]:
        return (yield from batch(self, AddTexts(texts, metadatas, ids, kwargs)))

    _add_texts.__qualname__ = f"{batch.__qualname__.rpartition('.')[0]}._add_texts"
    _add_texts.__module__, _add_texts.__doc__ = batch.__module__, batch.__doc__
    return twins(_add_texts)


def listed(texts: Iterable[str], metadatas: Sequence[dict[str, Any]] | None) -> list[str]:
    """The texts as a list; ``InvalidInput`` unless ``metadatas`` (if any) has one per text."""
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise InvalidInput(
            f"got {len(metadatas)} metadatas for {len(texts)} texts", field="metadatas"
        )
    return texts
