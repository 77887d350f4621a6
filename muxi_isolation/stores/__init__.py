"""Storage backends behind one protocol: in-memory, and SQL (SQLite, PostgreSQL + pgvector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..audit import Auditor
from ..quotas import Limits
from .base import Backend
from .memory import MemoryBackend

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Backend", "MemoryBackend", "open_backend", "open_configured_backend"]


def open_backend(url: str = "memory://", **options: Any) -> Backend:
    """A backend for a URL: ``memory://``, ``sqlite:///path.db`` or ``postgresql://...``."""
    if url == "memory://":
        return MemoryBackend()
    from .sql import SQLBackend  # SQLAlchemy is a core dependency, the drivers are extras

    return SQLBackend(url, **options)


def open_configured_backend(config: Config, *, statement_timeout: float | None = None) -> Backend:
    """The backend a config names, with ``admin_connection_string`` (if set) as the owner's
    ``admin_url``: forgetting a tenant and purging need it on PostgreSQL.
    ``statement_timeout``: the SQL backends' deadline per call (the server's).
    Its ``limits`` and ``audit`` are the config's, so every interface opened from it is
    bounded and audited alike."""
    backend = _open_configured(config, statement_timeout)
    backend.limits = Limits.from_config(config.limits)
    backend.audit = Auditor.from_config(config.audit, backend)
    return backend


def _open_configured(config: Config, statement_timeout: float | None) -> Backend:
    persistent = config.memory.persistent
    url = persistent.url
    if url == "memory://":
        return open_backend(url)
    options: dict[str, Any] = {
        "embedding_dimension": persistent.embedding_dimension,
        "embedding_precision": persistent.embedding_precision,
    }
    if statement_timeout is not None:
        options["statement_timeout"] = statement_timeout
    if persistent.admin_connection_string:
        options["admin_url"] = persistent.admin_connection_string
    return open_backend(url, **options)
