"""The backend contract: what a store must do for the trail.

A backend is found through the ``audit_plugin`` entry-point group (see
:func:`audit_plugin.hookspecs.audit_create_backend`). SQL backends subclass
:class:`audit_plugin.sql.SQLBackend`, which implements everything here except
the database-specific parts; any other store implements this protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from audit_plugin.records import AuditQuery, AuditRecord, AuditStatistics, StatusUpdate

BucketUnit = Literal["minute", "hour", "day"]
"""Width of one bucket of a message-volume series."""

BUCKET_UNITS: tuple[str, ...] = get_args(BucketUnit)

IdColumn = Literal["message_id", "correlation_id"]
"""The id columns a prefix can be looked up in."""


@runtime_checkable
class AuditBackend(Protocol):
    """A store for audit records."""

    name: str
    """Short name shown to users (``"sqlite"``, ``"postgresql"``)."""

    async def initialize(self) -> None:
        """Create tables and indexes if missing; safe to call on an existing store."""

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Insert ``rows`` and apply ``updates`` (in order) in one transaction.

        Inserting a ``message_id`` that is already stored is a no-op, so a
        batch retried after a lost commit acknowledgement creates no
        duplicates. Returns the ids among ``updates`` that exist (those
        updates were applied). Raises on failure with nothing committed.
        """

    async def query(self, query: AuditQuery, *, oldest_first: bool = False) -> list[AuditRecord]:
        """Records matching every filter of ``query``, one page."""

    async def get(self, message_id: str) -> AuditRecord | None:
        """The record of ``message_id``, or ``None``."""

    def stream(self, query: AuditQuery, *, oldest_first: bool = True) -> AsyncIterator[AuditRecord]:
        """All records matching ``query``'s filters (ignoring limit/offset), in constant memory."""

    async def ids_with_prefix(self, column: IdColumn, prefix: str, limit: int) -> list[str]:
        """Distinct values of ``column`` starting with ``prefix``, sorted, at most ``limit``.

        ``prefix`` is matched literally (``%`` and ``_`` are not wildcards).
        """

    async def ids_with_suffix(self, column: IdColumn, suffix: str, limit: int) -> list[str]:
        """Distinct values of ``column`` ending with ``suffix``, sorted, at most ``limit`` (matched literally)."""

    async def agent_history(self, agent_id: str, since: datetime, limit: int | None) -> list[AuditRecord]:
        """Messages ``agent_id`` sent or received since ``since``, newest first."""

    async def statistics(self, start_time: datetime | None, end_time: datetime | None) -> AuditStatistics:
        """Aggregates over messages with ``start_time <= timestamp <= end_time``."""

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete records with ``timestamp < cutoff``; return how many."""

    async def count(self, query: AuditQuery) -> int:
        """How many records match ``query``'s filters (limit/offset ignored)."""

    async def count_older_than(self, cutoff: datetime) -> int:
        """How many records have ``timestamp < cutoff`` (what retention would delete)."""

    def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        """Delete records with ``timestamp < cutoff`` in transactions of at most ``chunk_size`` rows.

        Yields each committed chunk's count (for progress); memory stays flat.
        """

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        """Nearest-rank percentiles (0-100) of delivery seconds of delivered messages in the window."""

    async def message_volume(
        self, start_time: datetime | None, end_time: datetime | None, unit: BucketUnit
    ) -> list[tuple[datetime, int]]:
        """``(bucket start, count)`` per ``unit`` ("minute", "hour", "day"), oldest first, empty ones absent."""

    async def close(self) -> None:
        """Release connections."""
