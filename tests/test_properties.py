"""Property-based tests: any value of any type either round-trips or is a documented input error.

Hypothesis generates messages, queries, status updates and CLI arguments over
the whole range of each type (huge and negative integers, datetimes from year
1 to 9999 in any fixed UTC offset, text with NUL characters and lone
surrogates, wrong types), on both backends. For every example exactly one of
these holds: the call succeeds and reading back gives the same values, or it
raises an :class:`~audit_plugin.exceptions.AuditError` that is also a
``ValueError``/``TypeError`` and nothing was stored or delivered. Each test
uses one trail (one database) and fresh ids per example.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from audit_plugin import (
    AuditPlugin,
    AuditQuery,
    Message,
    MessageAuditTrail,
    MessageBus,
    MessageStatus,
    MessageType,
    Priority,
)
from audit_plugin.cli import main as cli_main
from audit_plugin.exceptions import AuditError
from audit_plugin.model.validation import INT32_MAX, INT64_MAX
from tests.cli_support import seed_sample

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ---------------------------------------------------------------------------------------------------

INTEGER_EDGES = [0, -1, INT32_MAX, INT32_MAX + 1, INT64_MAX, INT64_MAX + 1, 2**64, -(2**63) - 1, 10**30]
integers = st.one_of(st.sampled_from(INTEGER_EDGES), st.integers(), st.integers(min_value=-(2**70), max_value=2**70))

offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
)
datetimes = st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), offsets))

texts = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.text(min_size=1020, max_size=1030, alphabet="ab"),
    st.sampled_from(["", "a\x00b", "\ud800", "🙂", "'; DROP TABLE message_audit_log; --"]),
)
wrong_types = st.one_of(
    st.none(), st.booleans(), st.floats(), st.binary(max_size=4), st.lists(st.integers(), max_size=2)
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None).filter(
        lambda x: not math.isfinite(x) or abs(x) < 1e15  # larger ones: see the known divergence at the end
    ),
    texts,
)
payloads = st.one_of(
    st.dictionaries(
        texts,
        st.recursive(
            json_scalars,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
    wrong_types,
    st.sets(st.integers(), max_size=2).map(lambda s: {"set": s}),
)


def enum_values(enum: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(list(enum)), st.sampled_from([m.value.lower() for m in enum]), texts, wrong_types)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


message_fields = st.fixed_dictionaries(
    {},
    optional={
        "from_agent": st.one_of(texts, wrong_types),
        "to_agent": st.one_of(texts, wrong_types),
        "message_type": enum_values(MessageType),
        "priority": enum_values(Priority),
        "payload": payloads,
        "correlation_id": maybe(st.one_of(texts, wrong_types)),
        "reply_to": maybe(texts),
        "timestamp": st.one_of(datetimes, wrong_types),
        "ttl_seconds": maybe(st.one_of(integers, wrong_types)),
    },
)


def is_input_error(exc: BaseException) -> bool:
    """A documented input error: under AuditError, also ValueError or TypeError, naming its field."""
    return isinstance(exc, AuditError) and isinstance(exc, ValueError | TypeError) and bool(getattr(exc, "field", ""))


def build_message(fields: dict[str, Any]) -> Message:
    """A message with ``fields`` over valid defaults and a fresh id."""
    defaults: dict[str, Any] = {
        "from_agent": "planner",
        "to_agent": "worker",
        "message_type": MessageType.COMMAND,
        "payload": {"n": 1},
    }
    return Message(**{**defaults, **fields, "message_id": str(uuid.uuid4())})


def assert_same_record(record: Any, message: Message) -> None:
    assert record is not None
    for name in ("message_id", "from_agent", "to_agent", "correlation_id", "reply_to", "ttl_seconds", "timestamp"):
        assert getattr(record, name) == getattr(message, name), name
    assert record.message_type is message.message_type and record.priority is message.priority
    assert record.payload == message.payload
    assert record.timestamp.utcoffset() == timedelta(0)


# -- messages, directly and through a bus in commit mode ---------------------------------------------------------


@EXAMPLES
@given(fields=message_fields)
async def test_any_message_is_recorded_as_given_or_refused_as_input(trail: MessageAuditTrail, fields: dict) -> None:
    try:
        message = build_message(fields)
        await trail.log_message(message)
    except Exception as exc:
        assert is_input_error(exc), repr(exc)
        assert await trail.count_messages() == trail.writer_stats.written  # nothing partial was stored
        return
    assert_same_record(await trail.get_message(message.message_id), message)


@EXAMPLES
@given(fields=message_fields)
async def test_commit_mode_never_delivers_a_message_without_its_record(trail: MessageAuditTrail, fields: dict) -> None:
    """Fields are set after the message is built, as another bus might: the plugin must check them again."""
    message = build_message({})
    for name, value in fields.items():
        setattr(message, name, value)
    bus = MessageBus()
    bus.register(AuditPlugin(trail, durability="commit"))
    handled: list[str] = []

    async def worker(delivered: Message) -> None:
        handled.append(delivered.message_id)

    bus.subscribe("worker", worker)
    if message.to_agent != "worker":
        with contextlib.suppress(AuditError):  # an unstorable agent id cannot subscribe either
            bus.subscribe(message.to_agent, worker)
    try:
        receipt = await bus.send(message)
    except Exception as exc:
        assert is_input_error(exc), repr(exc)
        assert handled == []
        assert await trail.get_message(message.message_id) is None
        return
    record = await trail.get_message(message.message_id)
    assert_same_record(record, message)
    assert record.status is receipt.status
    assert (message.message_id in handled) == (receipt.status is MessageStatus.DELIVERED)
    assert trail.writer_stats.failed == 0


# -- status updates ------------------------------------------------------------------------------------------------


@EXAMPLES
@given(
    status=enum_values(MessageStatus),
    delivered_at=maybe(st.one_of(datetimes, wrong_types)),
    error_message=maybe(st.one_of(texts, wrong_types)),
    retry_count=maybe(st.one_of(integers, wrong_types)),
)
async def test_any_status_update_is_applied_as_given_or_refused_as_input(
    trail: MessageAuditTrail, status: Any, delivered_at: Any, error_message: Any, retry_count: Any
) -> None:
    message = build_message({})
    await trail.log_message(message)
    try:
        applied = await trail.update_message_status(
            message.message_id, status, delivered_at, error_message, retry_count
        )
    except Exception as exc:
        assert is_input_error(exc), repr(exc)
        record = await trail.get_message(message.message_id)
        assert record is not None and record.status is MessageStatus.PENDING and record.retry_count == 0
        return
    assert applied is True
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.status.value == str(status).upper() or record.status is status
    if delivered_at is not None:
        expected = delivered_at if delivered_at.tzinfo else delivered_at.replace(tzinfo=UTC)
        assert record.delivered_at == expected
    assert record.error_message == error_message
    assert record.retry_count == (retry_count or 0)


# -- queries -------------------------------------------------------------------------------------------------------


@EXAMPLES
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "from_agent": maybe(st.one_of(texts, wrong_types)),
            "message_type": maybe(enum_values(MessageType)),
            "status": maybe(enum_values(MessageStatus)),
            "trace_id": maybe(st.one_of(st.text(alphabet="0123456789abcdefABCDEF", min_size=30, max_size=34), texts)),
            "start_time": maybe(st.one_of(datetimes, wrong_types)),
            "end_time": maybe(st.one_of(datetimes, wrong_types)),
            "limit": st.one_of(integers, wrong_types),
            "offset": st.one_of(integers, wrong_types),
        },
    )
)
async def test_any_query_answers_or_is_refused_as_input(trail: MessageAuditTrail, fields: dict) -> None:
    try:
        query = AuditQuery(**fields)
    except Exception as exc:
        assert is_input_error(exc), repr(exc)
        return
    records = await trail.query_messages(query)
    assert len(records) <= query.limit
    assert await trail.count_messages(query) >= len(records)
    streamed = [record async for record in trail.stream_messages(query)]
    assert len(streamed) == await trail.count_messages(query)


@EXAMPLES
@given(days=st.one_of(integers, wrong_types), limit=maybe(st.one_of(integers, wrong_types)))
async def test_any_agent_history_window_answers_or_is_refused_as_input(
    trail: MessageAuditTrail, days: Any, limit: Any
) -> None:
    try:
        records = await trail.get_agent_communication_history("planner", days=days, limit=limit)
    except Exception as exc:
        assert is_input_error(exc), repr(exc)
        return
    assert limit is None or len(records) <= limit


# -- CLI arguments -------------------------------------------------------------------------------------------------

relative_times = st.builds(
    lambda amount, unit: f"{amount}{unit}",
    st.one_of(st.integers(min_value=0), st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
    st.sampled_from(["s", "m", "min", "h", "d", "w"]),
)
iso_times = datetimes.map(lambda moment: moment.isoformat())
time_texts = st.one_of(relative_times, iso_times, st.just("now"), st.text(max_size=12))
number_texts = st.one_of(integers.map(str), st.floats().map(str), st.text(max_size=8))
cli_arguments = st.one_of(
    st.tuples(
        st.just("query"),
        st.sampled_from(["--since", "--until"]),
        time_texts,
        st.sampled_from(["--limit", "--offset"]),
        number_texts,
    ),
    st.tuples(st.just("agent"), st.just("alice"), st.just("--days"), number_texts),
    st.tuples(st.just("stats"), st.sampled_from(["--since", "--until"]), time_texts),
)


@pytest.fixture(scope="module")
def seeded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('properties')) / 'audit.db'}"
    seed_sample(url)
    return url


@pytest.fixture
def seeded_url(backend_name: str, seeded_sqlite: str, request: pytest.FixtureRequest) -> str:
    if backend_name == "sqlite":
        return seeded_sqlite
    url: str = request.getfixturevalue("database_url")
    seed_sample(url)
    return url


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(arguments=cli_arguments)
def test_any_cli_argument_is_answered_or_is_bad_input_never_a_bug(
    seeded_url: str, arguments: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assume("\x00" not in "".join(arguments))  # an argv string cannot hold NUL
    with pytest.raises(SystemExit) as exited:
        cli_main([*arguments, "--json", "--database-url", seeded_url])
    _, err = capsys.readouterr()
    code = exited.value.code
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        assert err.startswith("audit-plugin: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and "a bug" not in err


# -- payload text kept verbatim -------------------------------------------------------------------------------------


async def test_a_large_float_in_a_payload_reads_back_as_the_same_float(trail: MessageAuditTrail) -> None:
    """The payload column keeps the text (PostgreSQL ``json``, not ``jsonb``, which would give back 10**23)."""
    message = build_message({"payload": {"x": 1e23}})
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == {"x": 1e23}
