"""SQLAlchemy and driver errors mapped to the project's exceptions, at one boundary.

Connection failures become ``StorageUnavailable``; everything else from the database
becomes ``StorageError``; the driver's exception is always chained as ``__cause__``. The
message names the error class and the driver's first line, never the statement or its
parameters (which hold user data).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ...errors import InvalidInput, StorageError, StorageUnavailable

__all__ = ["describe", "mapped", "unavailable"]


def describe(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@contextmanager
def unavailable() -> Iterator[None]:
    """Around opening a connection: any database error there means we cannot reach it."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"cannot reach the database ({describe(exc)})") from exc


@contextmanager
def mapped() -> Iterator[None]:
    """Around a transaction's work: a dropped connection is unavailability, the rest errors."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StorageUnavailable(f"lost the database connection ({describe(exc)})") from exc
        if "different vector dimensions" in str(exc.orig):
            raise InvalidInput(
                f"embedding dimensions differ ({describe(exc)})", field="embedding"
            ) from exc
        raise StorageError(f"the database failed ({describe(exc)})") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"the database failed ({describe(exc)})") from exc
