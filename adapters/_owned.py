"""What every adapter class is built on: a shared backend, an ``Isolation``, or a URL.

Three forms, as the framework's own Postgres integrations have them:

- ``Adapter(backend, ...)``: share one backend (one pool) between many objects; the caller
  closes it.
- ``Adapter(iso, ...)``: an ``Isolation``'s backend and its sessions, so the session
  timeout is the one its config says (``memory.session_timeout``).
- ``Adapter.from_url(url, ...)`` / ``Adapter.from_config(source, ...)``: the adapter opens
  its own backend and closes it in ``close()`` / ``aclose()``, or at the end of a
  ``with`` / ``async with`` block. ``setup()`` / ``asetup()`` create the tables now
  (otherwise done on first use).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from muxi_isolation.audit import guard
from muxi_isolation.config import Config
from muxi_isolation.errors import UnsupportedStore
from muxi_isolation.facade import Isolation
from muxi_isolation.sessions import DEFAULT_TIMEOUT, SessionManager
from muxi_isolation.stores import open_backend
from muxi_isolation.stores.base import Backend

from ._plans import Plan, step, twins

__all__ = ["OwnsBackend", "Storage", "open_url", "unpack"]

Storage = Backend | Isolation
"""What an adapter's first argument may be."""

T = TypeVar("T", bound="OwnsBackend")


def unpack(
    storage: Storage, sessions: SessionManager | None = None
) -> tuple[Backend, SessionManager]:
    """The backend and the session manager an adapter acts through.

    An ``Isolation`` brings its own sessions (and so its configured timeout); a bare backend
    gets a ``SessionManager`` with the default timeout unless ``sessions`` is given.
    """
    if isinstance(storage, Isolation):
        return storage.backend, sessions if sessions is not None else storage.sessions
    if isinstance(storage, Backend):
        return storage, sessions if sessions is not None else SessionManager(storage)
    raise UnsupportedStore(
        f"a muxi_isolation Backend or Isolation is required, got {type(storage).__name__}"
    )


def open_url(
    url: str, *, session_timeout: float = DEFAULT_TIMEOUT, embedding_dimension: int | None = None
) -> Isolation:
    """An ``Isolation`` on a new backend for ``url`` (``memory://``, ``sqlite:///``, ...)."""
    options = {} if embedding_dimension is None else {"embedding_dimension": embedding_dimension}
    backend = open_backend(url, **options)
    try:
        return Isolation(backend, session_timeout=session_timeout)
    except BaseException:
        backend.close()
        raise


class OwnsBackend:
    """``from_url`` / ``from_config``, ``close`` and the context-manager protocol.

    A subclass takes ``Storage`` as its first constructor argument and says, through
    ``_storage_backend``, which backend it acts on.
    """

    # Only annotated: a class-level value would hide a pydantic subclass's private attribute.
    _owned: Backend | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        guard(cls, lambda self: self._storage_backend())  # its own refusals are audited too

    def _storage_backend(self) -> Backend:
        raise NotImplementedError("_storage_backend")

    @classmethod
    def from_url(
        cls: type[T],
        url: str,
        *args: Any,
        session_timeout: float = DEFAULT_TIMEOUT,
        embedding_dimension: int | None = None,
        **kwargs: Any,
    ) -> T:
        """A new object on its own backend for ``url``; closing the object closes it.

        ``args`` and ``kwargs`` are the constructor's, after its first argument.
        """
        iso = open_url(
            url, session_timeout=session_timeout, embedding_dimension=embedding_dimension
        )
        made = cls._owning(iso, *args, **kwargs)
        made._opened(url)
        return made

    @classmethod
    def from_config(
        cls: type[T],
        source: Config | str | Path | Mapping[str, Any] | None = None,
        *args: Any,
        secrets: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        """A new object on its own backend as the config names it (the seed's ``memory:``
        YAML, a dict or a ``Config``), with its ``session_timeout``."""
        return cls._owning(Isolation.from_config(source, secrets=secrets), *args, **kwargs)

    @classmethod
    def _owning(cls: type[T], iso: Isolation, *args: Any, **kwargs: Any) -> T:
        try:
            made = cast(Any, cls)(iso, *args, **kwargs)
        except BaseException:
            iso.close()
            raise
        made._owned = iso.backend
        return cast(T, made)

    def _opened(self, url: str) -> None:
        """Told the URL ``from_url`` opened (a serializable store keeps it)."""

    def _setup(self) -> Plan[None]:
        """Create or upgrade the tables now; on memory storage there is nothing to do."""
        backend: Any = self._storage_backend()
        if getattr(backend, "setup", None) is not None:  # SQL backends have both halves
            yield from step(backend.setup, backend.asetup)

    setup, asetup = twins(_setup)

    def _close(self) -> Plan[None]:
        """Close the backend this object opened (``from_url``/``from_config``); a shared
        backend stays open for its other users. Safe to call twice."""
        owned = getattr(self, "_owned", None)
        if owned is not None:
            yield from step(owned.close, owned.aclose)

    close, aclose = twins(_close)

    def __enter__(self: T) -> T:
        return self

    async def __aenter__(self: T) -> T:
        return self.__enter__()

    def _exit(self, *exc: object) -> Plan[None]:
        yield from step(self.close, self.aclose)

    __exit__, __aexit__ = twins(_exit, "__exit__", "__aexit__")
