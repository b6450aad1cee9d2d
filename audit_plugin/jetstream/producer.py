"""The producer side: a write-only backend that publishes each audit operation to a JetStream stream.

``MessageAuditTrail("nats://host:4222/<stream>")`` gets this backend from
the ``audit_create_backend`` hook; everything above the backend (the
plugin, the bus, the hooks, the group-commit writer, durability modes,
overflow policies) is unchanged. Where a SQL backend commits a batch, this
one publishes every operation of the batch concurrently and returns when
the stream has acknowledged all of them (each stored and replicated as the
stream is configured). So ``"commit"`` durability waits for the stream's
acknowledgement, ``"buffered"`` keeps its bound, and a NATS outage is a
store outage to the writer: the batch is held and published again (the
``Nats-Msg-Id`` of each operation lets the stream drop what it already has).

Reads are not possible: queries raise
:class:`~audit_plugin.exceptions.WriteOnlyTrailError`. Query the store the
ingesters write to (``audit-plugin ingest``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, NoReturn

import nats.errors
import nats.js.errors

from audit_plugin.backend import BucketUnit
from audit_plugin.exceptions import AuditStoreError, StoreUnavailableError, WriteOnlyTrailError
from audit_plugin.jetstream import wire
from audit_plugin.jetstream.address import StreamAddress, parse_address
from audit_plugin.jetstream.stream import connect, ensure_stream
from audit_plugin.ledger import FallbackRow
from audit_plugin.records import AuditQuery, AuditRecord, AuditStatistics, StatusUpdate

PUBLISH_TIMEOUT = 10.0
"""Seconds a batch waits for the stream's acknowledgements before it counts as failed (and is retried)."""

MESSAGE_TOO_LARGE = 10054
"""JetStream's error code for a message over the stream's size limit (retrying cannot help)."""


class JetStreamBackend:
    """Publishes records and status updates to a JetStream stream; see the module docs."""

    name = "jetstream"

    def __init__(self, url: str, *, publish_timeout: float = PUBLISH_TIMEOUT) -> None:
        self.address: StreamAddress = parse_address(url)
        self.publish_timeout = publish_timeout
        self._client: Any = None
        self._js: Any = None

    async def initialize(self) -> None:
        if self._client is None:
            self._client, self._js = await connect(self.address, name="audit-plugin producer")
        await ensure_stream(self._js, self.address)

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Publish every operation of the batch and wait for all acknowledgements.

        Returns the ids of every update (each was accepted by the stream;
        whether its message is stored is known only to the store). A server
        that cannot be reached or does not answer in time raises
        :class:`~audit_plugin.exceptions.StoreUnavailableError`, which the
        writer retries; an operation the stream refuses as too large raises
        :class:`~audit_plugin.exceptions.AuditStoreError`.
        """
        publishes = [
            (
                self.address.record_subject,
                wire.encode_record(row, fallback=isinstance(row, FallbackRow)),
                wire.record_msg_id(row["message_id"], fallback=isinstance(row, FallbackRow)),
            )
            for row in rows
        ]
        for update in map(wire.with_operation_id, updates):
            publishes.append((self.address.status_subject, wire.encode_update(update), wire.status_msg_id(update)))
        futures: list[asyncio.Future[Any]] = []
        try:
            for subject, body, msg_id in publishes:
                futures.append(
                    await self._js.publish_async(
                        subject, body, wait_stall=self.publish_timeout, headers={wire.MSG_ID_HEADER: msg_id}
                    )
                )
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.gather(*futures)
        except (nats.errors.MaxPayloadError, nats.js.errors.APIError) as exc:
            if isinstance(exc, nats.errors.MaxPayloadError) or exc.err_code == MESSAGE_TOO_LARGE:
                raise AuditStoreError(f"the stream refused an operation as too large: {exc}") from None
            raise StoreUnavailableError(f"JetStream refused the batch: {_describe(exc)}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreUnavailableError(f"NATS at {self.address.display()} unavailable: {_describe(exc)}") from exc
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # frees the client's slot for an unanswered publish
                elif not future.cancelled():
                    future.exception()
        return {update.message_id for update in updates}

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()

    # -- reads: not on a transport ---------------------------------------------------

    def _write_only(self) -> NoReturn:
        raise WriteOnlyTrailError(
            f"this trail publishes to the JetStream stream {self.address.display()} and cannot be read; "
            "query the database the ingesters write to (audit-plugin ingest --database-url ...)"
        )

    async def query(self, query: AuditQuery, *, oldest_first: bool = False) -> list[AuditRecord]:
        self._write_only()

    async def get(self, message_id: str) -> AuditRecord | None:
        self._write_only()

    def stream(self, query: AuditQuery, *, oldest_first: bool = True) -> AsyncIterator[AuditRecord]:
        self._write_only()

    async def agent_history(self, agent_id: str, since: datetime, limit: int | None) -> list[AuditRecord]:
        self._write_only()

    async def statistics(self, start_time: datetime | None, end_time: datetime | None) -> AuditStatistics:
        self._write_only()

    async def delete_older_than(self, cutoff: datetime) -> int:
        self._write_only()

    async def count(self, query: AuditQuery) -> int:
        self._write_only()

    async def count_older_than(self, cutoff: datetime) -> int:
        self._write_only()

    def delete_older_than_in_chunks(self, cutoff: datetime, chunk_size: int) -> AsyncIterator[int]:
        self._write_only()

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        self._write_only()

    async def message_volume(
        self, start_time: datetime | None, end_time: datetime | None, unit: BucketUnit
    ) -> list[tuple[datetime, int]]:
        self._write_only()


def _describe(exc: BaseException) -> str:
    description = getattr(exc, "description", None)
    return f"{type(exc).__name__}: {description or str(exc) or 'no answer'}"
