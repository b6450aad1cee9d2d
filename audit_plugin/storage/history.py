"""Reading the lifecycle back from ``message_audit_events``: one message's, or the chain's in order."""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_plugin.integrity.ledger import ChainEntry
from audit_plugin.model.lifecycle import LifecycleStep
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditRecord
from audit_plugin.storage.integrity_schema import events
from audit_plugin.storage.schema import audit_log

e = events.c


async def message_history(engine: AsyncEngine, message_id: str) -> list[LifecycleStep]:
    """``message_id``'s lifecycle entries in chain order, each with the seconds until the next."""
    stmt = (
        select(e.sequence, e.kind, e.status, e.at, e.retry_count, e.error, e.delivered_at, e.operation_id)
        .where(e.message_id == message_id, e.kind != "retention")
        .order_by(e.sequence)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    steps = []
    for index, row in enumerate(rows):
        following = rows[index + 1].at if index + 1 < len(rows) else None
        steps.append(
            LifecycleStep(
                sequence=row.sequence,
                kind=row.kind,
                status=MessageStatus(row.status),
                at=row.at,
                retry_count=row.retry_count,
                error=row.error,
                delivered_at=row.delivered_at,
                seconds=(following - row.at).total_seconds() if following is not None else None,
                operation_id=row.operation_id,
            )
        )
    return steps


RECORD_PREFIX = "r_"


async def entries_after(
    engine: AsyncEngine, chain_id: str, after: int, limit: int
) -> list[tuple[ChainEntry, AuditRecord | None]]:
    """``chain_id``'s entries numbered above ``after``, in order, at most ``limit``; each record entry with its record.

    One indexed range read on the events' primary key ``(chain_id, sequence)``,
    joined with the records of its ``"record"`` entries by message id.
    """
    joined = events.outerjoin(audit_log, and_(e.kind == "record", audit_log.c.message_id == e.message_id))
    stmt = (
        select(*events.c, *(column.label(RECORD_PREFIX + column.name) for column in audit_log.c))
        .select_from(joined)
        .where(e.chain_id == chain_id, e.sequence > after)
        .order_by(e.sequence)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    found = []
    for row in rows:
        entry = ChainEntry(**{column.name: row[column.name] for column in events.c})
        record = None
        if row[RECORD_PREFIX + "message_id"] is not None:
            record = AuditRecord.from_row({column.name: row[RECORD_PREFIX + column.name] for column in audit_log.c})
        found.append((entry, record))
    return found
