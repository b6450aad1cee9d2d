"""``CommittedBatch``: what one committed write batch stored, handed to the ``audit_batch_committed`` hook.

Built only when some plugin implements the hook, and lazily: the records and
chain entries are made into objects the first time an implementation reads
them, so a trail whose only listener counts batches pays nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from audit_plugin.integrity.ledger import AppendedEntries, ChainEntry
from audit_plugin.model.records import AuditRecord, StatusUpdate


@dataclass(eq=False)
class CommittedBatch:
    """One batch the trail's writer committed: its new records and the lifecycle entries it appended.

    :ivar trail: the :class:`~audit_plugin.MessageAuditTrail` that committed it.
    :ivar operations: records and status updates in the batch (what ``writer_stats.written`` counts).
    :ivar seconds: how long its transaction took.
    """

    trail: Any
    rows: Sequence[Mapping[str, Any]] = field(repr=False)
    updates: Sequence[StatusUpdate] = field(repr=False)
    appended: Sequence[AppendedEntries] = field(repr=False)
    """What the batch appended, per chain it appended to (one per shard its messages belong to)."""
    seconds: float
    chained: bool = True
    """Whether the store keeps the lifecycle chain (a ``nats://`` trail does not: its ingesters' store does)."""

    @property
    def operations(self) -> int:
        return len(self.rows) + len(self.updates)

    @cached_property
    def entries(self) -> list[ChainEntry]:
        """The lifecycle entries the batch appended, in chain order, chain after chain (empty for a store that
        keeps no chain).

        One ``"record"`` entry per record inserted, one per status change or
        retry applied, one ``"late"`` entry per update that arrived after its
        message's final status.
        """
        return [entry for chain in self.appended for entry in chain.chain_entries()]

    @cached_property
    def records(self) -> list[AuditRecord]:
        """The records the batch inserted, as stored (an encrypted payload stays encrypted).

        A record that was already stored (a redelivery) is not among them:
        only rows whose ``"record"`` entry the batch appended. For a store
        that keeps no chain (a ``nats://`` trail), every row of the batch.
        """
        if not self.chained:
            return [AuditRecord.from_row(row) for row in self.rows]
        inserted = {
            entry.event["message_id"]
            for chain in self.appended
            for entry in chain.entries
            if entry.event["kind"] == "record"
        }
        records, seen = [], set()
        for row in self.rows:
            message_id = row["message_id"]
            if message_id in inserted and message_id not in seen:
                seen.add(message_id)
                records.append(AuditRecord.from_row(row))
        return records
