"""SQLAlchemy and driver errors mapped to the project's exceptions, at one boundary.

Connection failures become ``StorageUnavailable``; everything else from the database
becomes ``StorageError``; the driver's exception is always chained as ``__cause__``. The
message names the error class and the driver's first line, never the statement or its
parameters (which hold user data).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ...errors import (
    DeadlineExceeded,
    InvalidInput,
    IsolationError,
    StorageError,
    StorageUnavailable,
)

__all__ = ["describe", "from_driver", "mapped", "unavailable"]


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


def _translated(exc: SQLAlchemyError, *, opening: bool) -> IsolationError:
    """Our error for ``exc``; ``opening``: it came while opening a connection, so any error
    there means we cannot reach the database."""
    said = describe(exc)
    if opening:
        if _past_deadline(exc):
            return DeadlineExceeded(f"no connection in time ({said})")
        return StorageUnavailable(f"cannot reach the database ({said})")
    if not isinstance(exc, DBAPIError):
        return StorageError(f"the database failed ({said})")
    if _past_deadline(exc):
        return DeadlineExceeded(f"the call ran past its deadline ({said})")
    if exc.connection_invalidated:
        return StorageUnavailable(f"lost the database connection ({said})")
    if "different vector dimensions" in str(exc.orig):
        return InvalidInput(f"embedding dimensions differ ({said})", field="embedding")
    if "out of range for type halfvec" in str(exc.orig):
        return InvalidInput(  # the driver's message quotes the value: not repeated
            "an embedding value is beyond the range of embedding_precision half "
            "(float16: at most 65504 in size)",
            field="embedding",
        )
    return StorageError(f"the database failed ({said})")


@contextmanager
def mapped(*, opening: bool = False) -> Iterator[None]:
    """Around a transaction's work: a dropped connection is unavailability, the rest errors
    (``opening``: see ``unavailable``)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise _translated(exc, opening=opening) from exc


def unavailable() -> AbstractContextManager[None]:
    """Around opening a connection: any database error there means we cannot reach it."""
    return mapped(opening=True)


def from_driver(
    dialect: Dialect, exc: Any, pooled: Any = None, connection: Any = None
) -> StatementError:
    """A DB-API error as SQLAlchemy raises it (``DBAPIError``, the driver's error as ``orig``,
    no statement or parameters in its text), for ``mapped``; a connection the driver reports
    lost (``connection``: the driver's, which psycopg marks broken) is dropped from the pool
    (``pooled``), as SQLAlchemy does."""
    lost = dialect.is_disconnect(exc, connection, None)
    if lost and pooled is not None:
        pooled.invalidate(exc)
    error: StatementError = DBAPIError.instance(
        None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
    )
    return error
