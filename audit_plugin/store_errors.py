"""Store errors mapped once, where the trail calls its backend to read.

A read the database refuses reaches the caller as
:class:`~audit_plugin.exceptions.AuditStoreError` whose message is the
driver's own first line, never SQLAlchemy's wrapper with the statement and
its parameters (the original stays the ``__cause__``, for tracebacks), the
way httpx maps its transport's exceptions at the boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

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
