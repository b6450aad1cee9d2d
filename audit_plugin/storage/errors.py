"""Store errors mapped once: where the trail calls its backend to read, and how a driver error is classified.

Writes are mapped where a batch is written (:mod:`audit_plugin.storage.batch_write`),
with :func:`is_unavailable` as every dialect's common ground. A read the
database refuses reaches the caller as
:class:`~audit_plugin.exceptions.AuditStoreError` whose message is the
driver's own first line, never SQLAlchemy's wrapper with the statement and
its parameters (the original stays the ``__cause__``, for tracebacks), the
way httpx maps its transport's exceptions at the boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from audit_plugin.exceptions import AuditStoreError, driver_message

T = TypeVar("T")


@contextlib.contextmanager
def store_errors(operation: str) -> Iterator[None]:
    """Re-raise a database error from the block as ``AuditStoreError("{operation} failed: ...")``."""
    try:
        yield
    except SQLAlchemyError as exc:
        reason = driver_message(exc) or type(exc).__name__
        raise AuditStoreError(f"{operation} failed: {reason}") from exc


async def mapped_stream(operation: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``items``, with database errors raised while iterating mapped as :func:`store_errors` does."""
    with store_errors(operation):
        async for item in items:
            yield item


PEP249_TRANSIENT = ("OperationalError", "InterfaceError")
"""DB-API (PEP 249) exception names for failures of the database or the connection, not of the data."""


def is_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` is, by its kind, a failure of the store rather than of the data (retrying can cure it).

    What every driver shares: the DB-API's ``OperationalError`` and
    ``InterfaceError`` (SQLAlchemy's wrappers or a driver's own), a
    connection SQLAlchemy invalidated, and ``OSError`` (``ConnectionError``,
    ``TimeoutError``). A dialect adds its database's own (PostgreSQL: SQLSTATE
    classes, see its backend) when it classifies errors for
    :mod:`audit_plugin.storage.batch_write`.
    """
    if isinstance(exc, OperationalError | InterfaceError | OSError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return any(cls.__name__ in PEP249_TRANSIENT for cls in type(exc).__mro__)
