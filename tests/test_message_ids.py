"""Default message ids: canonical, time-ordered UUIDs (version 7); ids a caller chooses are kept as given."""

from __future__ import annotations

import time
import uuid

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.model.messages import new_message_id
from tests.helpers import make_message


def test_default_id_is_a_canonical_version_7_uuid() -> None:
    message_id = Message("planner", "worker", MessageType.QUERY).message_id
    parsed = uuid.UUID(message_id)
    assert str(parsed) == message_id  # lower-case, hyphenated: the canonical text form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_default_id_carries_the_time_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    unix_ms = uuid.UUID(new_message_id()).int >> 80  # the top 48 bits: milliseconds since the epoch
    after = time.time_ns() // 1_000_000
    assert before <= unix_ms <= after


def test_ids_made_one_after_another_sort_in_the_order_they_were_made() -> None:
    ids = [new_message_id() for _ in range(20_000)]  # many share a millisecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    built = [make_message().message_id for _ in range(1_000)]
    assert built == sorted(built) and built[0] > ids[-1]


async def test_caller_chosen_ids_are_stored_unchanged(trail: MessageAuditTrail) -> None:
    chosen = ["order-17/step-3", "3F2504E0-4F89-11D3-9A0C-0305E82C3301", str(uuid.uuid4())]
    for message_id in chosen:
        await trail.log_message(make_message(message_id=message_id))
    for message_id in chosen:
        record = await trail.get_message(message_id)
        assert record is not None and record.message_id == message_id
