"""Storage backends behind one protocol: in-memory, and SQL (SQLite, PostgreSQL + pgvector)."""

from __future__ import annotations

from typing import Any

from .base import Backend
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend", "open_backend"]


def open_backend(url: str = "memory://", **options: Any) -> Backend:
    """A backend for a URL: ``memory://``, ``sqlite:///path.db`` or ``postgresql://...``."""
    if url == "memory://":
        return MemoryBackend()
    from .sql import SQLBackend  # SQLAlchemy is a core dependency, the drivers are extras

    return SQLBackend(url, **options)
