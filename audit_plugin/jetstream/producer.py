"""The producer side: a write-only backend that publishes audit operations to a JetStream stream, in batches.

``MessageAuditTrail("nats://host:4222/<stream>")`` gets this backend from
the ``audit_create_backend`` hook; everything above the backend (the
plugin, the bus, the hooks, the group-commit writer, durability modes,
overflow policies) is unchanged. Where a SQL backend commits a batch, this
one splits the writer's batch by shard, packs each shard's operations into
as few JetStream messages as ``batch_bytes`` allows (format 2, see
:mod:`audit_plugin.jetstream.wire`), publishes them concurrently and returns
when the stream has acknowledged all of them (each stored and replicated as
the stream is configured). So ``"commit"`` durability still means "durably
in the stream", ``"buffered"`` keeps its bound, and a NATS outage is a store
outage to the writer: the batch is held and published again (its messages'
``Nats-Msg-Id`` is their digest, so the stream drops what it already has).
How many operations a message holds is the writer's batch: bounded by the
trail's ``batch_size``, and, with ``batch_interval``, by a linger time;
``close()`` flushes what is queued.

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

from audit_plugin.exceptions import AuditStoreError, StoreUnavailableError, WriteOnlyTrailError
from audit_plugin.integrity.shards import shard_of
from audit_plugin.jetstream import wire
from audit_plugin.jetstream.address import StreamAddress, parse_address
from audit_plugin.jetstream.stream import connect, ensure_stream
from audit_plugin.model.records import AuditQuery, AuditRecord, AuditStatistics, StatusUpdate
from audit_plugin.storage.backend import BucketUnit

PUBLISH_TIMEOUT = 10.0
"""Seconds a batch waits for the stream's acknowledgements before it counts as failed (and is retried)."""

MESSAGE_TOO_LARGE = 10054
"""JetStream's error code for a message over the stream's size limit (retrying cannot help)."""

HEADER_ROOM = 512
"""Bytes of a message's ``max_payload`` left for its headers and subject."""


class JetStreamBackend:
    """Publishes records and status updates to a JetStream stream; see the module docs."""

    name = "jetstream"

    def __init__(self, url: str, *, publish_timeout: float = PUBLISH_TIMEOUT) -> None:
        self.address: StreamAddress = parse_address(url)
        self.publish_timeout = publish_timeout
        self.shards = self.address.shards or 1
        """The stream's shard count (read from the stream at :meth:`initialize`)."""
        self._client: Any = None
        self._js: Any = None
        self._max_bytes = self.address.batch_bytes

    async def initialize(self) -> None:
        if self._client is None:
            self._client, self._js = await connect(self.address, name="audit-plugin producer")
        try:
            self.shards = await ensure_stream(self._js, self.address)
        except BaseException:
            await self.close()  # a trail whose initialize() fails is not closed by its caller
            raise
        self._max_bytes = min(self.address.batch_bytes, self._client.max_payload - HEADER_ROOM)

    async def write_batch(self, rows: Sequence[dict[str, Any]], updates: Sequence[StatusUpdate]) -> set[str]:
        """Publish every operation of the batch, packed per shard, and wait for all acknowledgements.

        Returns the ids of every update (each was accepted by the stream;
        whether its message is stored is known only to the store). A server
        that cannot be reached or does not answer in time raises
        :class:`~audit_plugin.exceptions.StoreUnavailableError`, which the
        writer retries; an operation the stream refuses as too large raises
        :class:`~audit_plugin.exceptions.AuditStoreError`.
        """
        shards = self.shards
        per_shard: list[list[tuple[Any, ...]]] = [[] for _ in range(shards)]
        for row in rows:
            per_shard[shard_of(row["message_id"], shards)].append(wire.record_item(row))
        for update in map(wire.with_operation_id, updates):
            per_shard[shard_of(update.message_id, shards)].append(wire.status_item(update))
        futures: list[asyncio.Future[Any]] = []
        try:
            for shard, items in enumerate(per_shard):
                if not items:
                    continue
                subject = self.address.ops_subject(shard)
                for body in wire.encode_batches(shard, shards, items, self._max_bytes):
                    digest = wire.body_digest(body)
                    headers = {wire.MSG_ID_HEADER: wire.batch_msg_id(digest), wire.DIGEST_HEADER: digest}
                    futures.append(
                        await self._js.publish_async(subject, body, wait_stall=self.publish_timeout, headers=headers)
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
