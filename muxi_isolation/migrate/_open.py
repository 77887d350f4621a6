"""The backend a config names, with the owner's URL for tenant-wide maintenance."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..stores import Backend, open_backend

__all__ = ["open_configured_backend"]


def open_configured_backend(config: Config) -> Backend:
    """As ``Isolation.from_config`` opens it, plus ``admin_connection_string`` (if set) as
    the backend's ``admin_url``: forgetting a tenant and purging need it on PostgreSQL."""
    persistent = config.memory.persistent
    url = persistent.url
    if url == "memory://":
        return open_backend(url)
    options: dict[str, Any] = {"embedding_dimension": persistent.embedding_dimension}
    if persistent.admin_connection_string:
        options["admin_url"] = persistent.admin_connection_string
    return open_backend(url, **options)
