"""The gate that serializes transactions on a shared in-memory SQLite database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

__all__ = ["Gate"]


class Gate:
    """Serializes transactions on a shared in-memory SQLite database (one connection)."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        with self._lock:
            yield

    @asynccontextmanager
    async def ahold(self) -> AsyncIterator[None]:
        if not self.active:
            yield
            return
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.001)
        try:
            yield
        finally:
            self._lock.release()
