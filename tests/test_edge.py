"""One edge for every input: what neither store can hold is refused at the call, the same way on both.

Each test here is one way a value used to get past validation and fail in the
store (or be stored by one backend and refused by the other), or a promise of
the writer (drain on close, final stats) that did not hold.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from audit_plugin import AuditPlugin, AuditQuery, Message, MessageAuditTrail, MessageBus, MessageStatus, MessageType
from audit_plugin.exceptions import AuditError, AuditStoreError, FieldTypeError, InvalidFieldError, TrailStateError
from audit_plugin.model.validation import INT32_MAX, INT64_MAX
from tests.helpers import make_message

PLUS_5 = timezone(timedelta(hours=5))
MINUS_5 = timezone(timedelta(hours=-5))
NO_UTC_EQUIVALENT = [datetime(1, 1, 1, tzinfo=PLUS_5), datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_5)]


def _input_error(exc: BaseException, field: str) -> None:
    assert isinstance(exc, AuditError) and isinstance(exc, ValueError | TypeError), repr(exc)
    assert exc.field == field  # type: ignore[attr-defined]


# -- integers: the narrower column decides -----------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [INT32_MAX + 1, 2**63, 2**64, 10**30])
def test_ttl_beyond_an_integer_column_is_refused_when_the_message_is_built(ttl: int) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        make_message(ttl_seconds=ttl)
    _input_error(caught.value, "ttl_seconds")


async def test_the_largest_storable_counts_round_trip(trail: MessageAuditTrail) -> None:
    message = make_message(ttl_seconds=INT32_MAX)
    await trail.log_message(message)
    assert await trail.update_message_status(message.message_id, MessageStatus.FAILED, retry_count=INT32_MAX)
    record = await trail.get_message(message.message_id)
    assert record is not None and record.ttl_seconds == INT32_MAX and record.retry_count == INT32_MAX


@pytest.mark.parametrize("retry_count", [INT32_MAX + 1, 2**64])
async def test_retry_count_beyond_an_integer_column_is_refused_before_queueing(
    trail: MessageAuditTrail, retry_count: int
) -> None:
    message = make_message()
    await trail.log_message(message)
    with pytest.raises(InvalidFieldError) as caught:
        await trail.update_message_status(message.message_id, MessageStatus.FAILED, retry_count=retry_count)
    _input_error(caught.value, "retry_count")
    record = await trail.get_message(message.message_id)
    assert record is not None and record.status is MessageStatus.PENDING and record.retry_count == 0
    assert trail.writer_stats.failed == 0


async def test_a_message_changed_after_it_was_built_is_checked_again_when_recorded(trail: MessageAuditTrail) -> None:
    message = make_message()
    message.ttl_seconds = 2**31  # a Message is mutable: another bus may set fields after building it
    with pytest.raises(InvalidFieldError) as caught:
        await trail.log_message(message)
    _input_error(caught.value, "ttl_seconds")
    message.from_agent = 42  # type: ignore[assignment]
    with pytest.raises(FieldTypeError) as type_error:
        await trail.log_message(message)
    _input_error(type_error.value, "from_agent")
    await trail.flush()
    assert await trail.query_messages() == []


@pytest.mark.parametrize("field", ["limit", "offset"])
@pytest.mark.parametrize("value", [2**63, 10**30])
def test_query_paging_beyond_bigint_is_refused(field: str, value: int) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        AuditQuery(**{field: value})
    _input_error(caught.value, f"AuditQuery.{field}")


async def test_the_largest_offset_is_a_valid_empty_page(trail: MessageAuditTrail) -> None:
    await trail.log_message(make_message())
    assert await trail.query_messages(AuditQuery(offset=INT64_MAX)) == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"days": 10**6}, "days"), ({"days": 10**9}, "days"), ({"days": 10**30}, "days"), ({"limit": 2**63}, "limit")],
)
async def test_agent_history_out_of_range_is_refused(trail: MessageAuditTrail, arguments: dict, field: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        await trail.get_agent_communication_history("planner", **arguments)
    _input_error(caught.value, field)


async def test_agent_history_back_to_year_one_is_answered(trail: MessageAuditTrail) -> None:
    message = make_message()
    await trail.log_message(message)
    most = (datetime.now(UTC).replace(tzinfo=None) - datetime.min).days
    records = await trail.get_agent_communication_history("planner", days=most, limit=INT64_MAX)
    assert [record.message_id for record in records] == [message.message_id]


# -- datetimes: a UTC equivalent must exist ----------------------------------------------------------------------


@pytest.mark.parametrize("moment", NO_UTC_EQUIVALENT, ids=["year-1-at-plus-5", "year-9999-at-minus-5"])
async def test_a_datetime_without_a_utc_equivalent_is_an_input_error_everywhere(
    trail: MessageAuditTrail, moment: datetime
) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        make_message(at=moment)
    _input_error(caught.value, "timestamp")
    with pytest.raises(InvalidFieldError) as caught:
        AuditQuery(start_time=moment)
    _input_error(caught.value, "AuditQuery.start_time")
    message = make_message()
    await trail.log_message(message)
    with pytest.raises(InvalidFieldError) as caught:
        await trail.update_message_status(message.message_id, MessageStatus.DELIVERED, delivered_at=moment)
    _input_error(caught.value, "delivered_at")
    with pytest.raises(InvalidFieldError) as caught:
        await trail.get_statistics(end_time=moment)
    _input_error(caught.value, "end_time")


@pytest.mark.parametrize(
    "moment",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, 5, tzinfo=PLUS_5), datetime(9999, 12, 31, 23, 59, 59, 999999)],
    ids=["first-utc", "first-at-plus-5", "last-naive"],
)
async def test_the_first_and_last_representable_times_round_trip(trail: MessageAuditTrail, moment: datetime) -> None:
    message = make_message(at=moment)
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None and record.timestamp == message.timestamp
    assert [r.message_id for r in await trail.query_messages(AuditQuery(start_time=moment, end_time=moment))] == [
        message.message_id
    ]


# -- commit mode never delivers what it could not record ---------------------------------------------------------


def _bus(trail: MessageAuditTrail, handled: list[Message]) -> MessageBus:
    bus = MessageBus()
    bus.register(AuditPlugin(trail, durability="commit"))

    async def worker(message: Message) -> None:
        handled.append(message)

    bus.subscribe("worker", worker)
    return bus


async def test_commit_mode_refuses_an_out_of_range_message_before_delivery(trail: MessageAuditTrail) -> None:
    handled: list[Message] = []
    bus = _bus(trail, handled)
    message = Message("planner", "worker", MessageType.COMMAND, {"x": 1})
    message.ttl_seconds = 2**31
    with pytest.raises(InvalidFieldError, match="ttl_seconds"):
        await bus.send(message)
    assert handled == []
    assert await trail.get_message(message.message_id) is None
    assert trail.writer_stats.failed == 0


async def _refuse_inserts_from(trail: MessageAuditTrail, agent: str) -> None:
    """A trigger that makes the store itself refuse records from ``agent`` (a real refusal, not a mock)."""
    engine = trail.backend.engine  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON message_audit_log "
                    f"WHEN NEW.from_agent = '{agent}' BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.from_agent = '{agent}' THEN RAISE EXCEPTION 'refused by policy'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text("CREATE TRIGGER refuse BEFORE INSERT ON message_audit_log FOR EACH ROW EXECUTE FUNCTION refuse()")
            )


async def test_commit_mode_does_not_deliver_a_record_the_store_refused(trail: MessageAuditTrail) -> None:
    await _refuse_inserts_from(trail, "rogue")
    handled: list[Message] = []
    bus = _bus(trail, handled)
    refused = Message("rogue", "worker", MessageType.COMMAND, {"x": 1})
    with pytest.raises(AuditStoreError) as caught:
        await bus.send(refused)
    assert "SELECT" not in str(caught.value) and "INSERT" not in str(caught.value)
    assert handled == []
    assert await trail.get_message(refused.message_id) is None
    accepted = Message("planner", "worker", MessageType.COMMAND, {"x": 2})
    assert (await bus.send(accepted)).status is MessageStatus.DELIVERED
    assert handled == [accepted]
    record = await trail.get_message(accepted.message_id)
    assert record is not None and record.status is MessageStatus.DELIVERED


# -- store errors on reads ---------------------------------------------------------------------------------------


async def test_a_read_the_store_refuses_is_an_audit_store_error_without_sql(trail: MessageAuditTrail) -> None:
    async with trail.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text("ALTER TABLE message_audit_log RENAME TO moved_away"))
    with pytest.raises(AuditStoreError) as caught:
        await trail.query_messages(AuditQuery(from_agent="planner"))
    message = str(caught.value)
    assert message.startswith("query_messages failed: ")
    assert "SELECT" not in message and "planner" not in message and "[SQL" not in message
    with pytest.raises(AuditStoreError, match=r"^stream_messages failed: "):
        [record async for record in trail.stream_messages()]


# -- close(): drain what was accepted, refuse who still waits, keep the stats ------------------------------------


async def test_close_drains_everything_accepted_and_refuses_only_callers_still_waiting(database_url: str) -> None:
    trail = MessageAuditTrail(database_url, max_queue=20, batch_size=5)
    await trail.initialize()
    messages = [make_message(seconds=n) for n in range(300)]
    tasks = [asyncio.create_task(trail.log_message(m)) for m in messages]
    await asyncio.sleep(0)  # every caller has queued its record or is waiting for space
    await trail.close()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    committed = {m.message_id for m, outcome in zip(messages, outcomes, strict=True) if outcome == m.message_id}
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert all(isinstance(exc, TrailStateError) for exc in refused), {type(exc) for exc in refused}
    assert len(committed) >= 20 and len(committed) + len(refused) == 300
    stats = trail.writer_stats  # readable after close(): the final counts
    assert stats.abandoned == 0 and stats.failed == 0 and stats.queue_depth == 0
    assert stats.written == len(committed)
    async with MessageAuditTrail(database_url) as reopened:
        stored = {record.message_id async for record in reopened.stream_messages()}
    assert stored == committed


async def test_writer_stats_stay_readable_after_close(database_url: str) -> None:
    trail = MessageAuditTrail(database_url)
    with pytest.raises(TrailStateError):
        _ = trail.writer_stats  # not initialised yet: nothing to report
    await trail.initialize()
    await trail.log_message(make_message())
    await trail.close()
    assert trail.writer_stats.written == 1 and trail.writer_stats.abandoned == 0


async def test_the_batch_being_written_counts_against_max_queue(database_url: str) -> None:
    """max_queue bounds every operation accepted and not yet committed, so it is the exact loss window."""
    async with MessageAuditTrail(database_url, max_queue=10, batch_size=10, overflow="drop_newest") as trail:
        accepted: list[asyncio.Future] = []
        most_unsettled = 0
        for round_ in range(20):
            for n in range(15):
                future = trail.enqueue_message_nowait(make_message(seconds=round_ * 100 + n))
                assert future is not None
                if not future.done():  # not dropped on arrival
                    accepted.append(future)
                unsettled = sum(not f.done() for f in accepted)  # what a crash now would lose
                assert unsettled == trail.writer_stats.queue_depth <= 10
                most_unsettled = max(most_unsettled, unsettled)
            await asyncio.sleep(0)  # the writer takes a batch: in flight, it still holds its slots
        await trail.flush()
        stats = trail.writer_stats
        assert most_unsettled == 10
        assert stats.written == await trail.count_messages() == sum(f.exception() is None for f in accepted)


# -- durations and the remaining numeric options -------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, "5"])
async def test_durations_must_be_finite_seconds(trail: MessageAuditTrail, seconds: object) -> None:
    with pytest.raises(AuditError) as caught:
        AuditPlugin(trail, commit_timeout=seconds)  # type: ignore[arg-type]
    _input_error(caught.value, "commit_timeout")
    with pytest.raises(AuditError) as caught:
        MessageBus(retry_delay=seconds)  # type: ignore[arg-type]
    _input_error(caught.value, "retry_delay")
    with pytest.raises(AuditError) as caught:
        await trail.flush(seconds)  # type: ignore[arg-type]
    _input_error(caught.value, "timeout")
    with pytest.raises(AuditError) as caught:
        MessageAuditTrail(trail.database_url, batch_interval=seconds)  # type: ignore[arg-type]
    _input_error(caught.value, "batch_interval")
    with pytest.raises(AuditError) as caught:
        await trail.close(seconds)  # type: ignore[arg-type]
    _input_error(caught.value, "timeout")
    await trail.log_message(make_message())  # the refused close() left the trail open


def test_more_retries_than_a_retry_count_column_holds_are_refused() -> None:
    with pytest.raises(InvalidFieldError) as caught:
        MessageBus(max_retries=INT32_MAX + 1)
    _input_error(caught.value, "max_retries")


async def test_the_retention_cutoff_of_the_first_day_is_the_first_representable_time(trail: MessageAuditTrail) -> None:
    assert trail.retention_cutoff(datetime(1, 1, 2, tzinfo=UTC)) == datetime.min.replace(tzinfo=UTC)
    with pytest.raises(InvalidFieldError) as caught:
        trail.retention_cutoff(datetime(1, 1, 1, tzinfo=PLUS_5))
    _input_error(caught.value, "now")
