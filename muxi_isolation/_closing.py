"""``with thing:`` closes ``thing`` on the way out: the one ``__enter__`` / ``__exit__``."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Closing"]

C = TypeVar("C", bound="Closing")


class Closing:
    """A mixin for a class with ``close()``: ``with`` gives the object and closes it after."""

    def close(self) -> None:
        raise NotImplementedError("close")

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
