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
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ...errors import DeadlineExceeded, InvalidInput, StorageError, StorageUnavailable

__all__ = ["describe", "mapped", "unavailable"]


def describe(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# PostgreSQL's answers when a call runs past its deadline: statement_timeout (57014),
# lock_timeout (55P03), idle_in_transaction_session_timeout (25P03), transaction_timeout.
_DEADLINE_STATES = frozenset({"57014", "55P03", "25P03", "25P04"})


def _past_deadline(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):  # no pooled connection came free in time
        return True
    cause = exc.orig if isinstance(exc, DBAPIError) else None
    if getattr(cause, "sqlstate", None) in _DEADLINE_STATES:
        return True
    return "database is locked" in str(cause)  # SQLite's busy timeout ran out


@contextmanager
def unavailable() -> Iterator[None]:
    """Around opening a connection: any database error there means we cannot reach it."""
    try:
        yield
    except SQLAlchemyError as exc:
        if _past_deadline(exc):
            raise DeadlineExceeded(f"no connection in time ({describe(exc)})") from exc
        raise StorageUnavailable(f"cannot reach the database ({describe(exc)})") from exc


@contextmanager
def mapped() -> Iterator[None]:
    """Around a transaction's work: a dropped connection is unavailability, the rest errors."""
    try:
        yield
    except DBAPIError as exc:
        if _past_deadline(exc):
            raise DeadlineExceeded(f"the call ran past its deadline ({describe(exc)})") from exc
        if exc.connection_invalidated:
            raise StorageUnavailable(f"lost the database connection ({describe(exc)})") from exc
        if "different vector dimensions" in str(exc.orig):
            raise InvalidInput(
                f"embedding dimensions differ ({describe(exc)})", field="embedding"
            ) from exc
        if "out of range for type halfvec" in str(exc.orig):
            raise InvalidInput(  # the driver's message quotes the value: not repeated
                "an embedding value is beyond the range of embedding_precision half "
                "(float16: at most 65504 in size)",
                field="embedding",
            ) from exc
        raise StorageError(f"the database failed ({describe(exc)})") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"the database failed ({describe(exc)})") from exc
