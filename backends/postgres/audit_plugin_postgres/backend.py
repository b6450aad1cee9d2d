"""PostgreSQL specifics: asyncpg driver, jsonb payloads, idempotent bulk insert."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.backend import BucketUnit
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.schema import audit_log
from audit_plugin.sql import SQLBackend, delivered_in_window

_insert_ignoring_duplicates = pg_insert(audit_log).on_conflict_do_nothing(index_elements=["message_id"])


def _with_async_driver(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername != "postgresql+asyncpg":
        raise InvalidFieldError(
            "database_url",
            f"PostgreSQL driver {parsed.drivername!r} is not supported; use postgresql+asyncpg://user@host/db",
        )
    return url


class PostgresBackend(SQLBackend):
    """An audit store in a PostgreSQL database (payload as ``jsonb``)."""

    name = "postgresql"

    def __init__(self, url: str, **engine_options: Any) -> None:
        super().__init__(_with_async_driver(url), **engine_options)

    def engine_options(self) -> dict[str, Any]:
        # Connections die when the server restarts; check each one out alive.
        return {"pool_pre_ping": True}

    async def insert_rows(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        await conn.execute(_insert_ignoring_duplicates, list(rows))

    def seconds_between(self, start: Any, end: Any) -> ColumnElement[float]:
        return func.extract("epoch", end - start)

    def time_bucket(self, column: Any, unit: BucketUnit) -> ColumnElement[Any]:
        return func.date_trunc(unit, column, "UTC")

    async def delivery_percentiles(
        self, start_time: datetime | None, end_time: datetime | None, percentiles: Sequence[float]
    ) -> dict[float, float | None]:
        # One pass with the native nearest-rank aggregate instead of a sort per percentile.
        latency = cast(self.seconds_between(audit_log.c.timestamp, audit_log.c.delivered_at), Float)
        columns = [func.percentile_disc(p / 100).within_group(latency) for p in percentiles]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*columns).where(*delivered_in_window(start_time, end_time)))).one()
        return {p: None if value is None else float(value) for p, value in zip(percentiles, row, strict=True)}
