"""Mermaid sequence-diagram source: labels from the store are inert, one arrow per message."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from audit_plugin import MessageStatus, MessageType
from audit_plugin.records import AuditRecord
from audit_plugin.web.diagram import MAX_LABEL, mermaid_text, sequence_diagram
from tests.helpers import BASE_TIME

INERT = re.compile(r"(?:[A-Za-z0-9 .,_-]|#\d+;)*")


@given(st.text(max_size=200))
def test_any_text_becomes_an_inert_label_that_decodes_back(text: str) -> None:
    label = mermaid_text(text, MAX_LABEL)
    assert INERT.fullmatch(label)
    decoded = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)
    assert decoded == (text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…")


def record(n: int, sender: str, receiver: str, kind: MessageType, status: MessageStatus) -> AuditRecord:
    return AuditRecord(
        message_id=f"m{n}",
        from_agent=sender,
        to_agent=receiver,
        message_type=kind,
        priority="NORMAL",  # type: ignore[arg-type]
        status=status,
        correlation_id="c",
        reply_to=None,
        payload={},
        timestamp=BASE_TIME,
        delivered_at=None,
        ttl_seconds=None,
        retry_count=n,
        error_message=None,
    )


def test_one_arrow_per_message_with_agents_only_as_aliases() -> None:
    hostile = "a;b%%{init: {'securityLevel':'loose'}}%%\n<img src=x onerror=alert(1)>"
    records = [
        record(0, "planner", hostile, MessageType.QUERY, MessageStatus.DELIVERED),
        record(1, hostile, "planner", MessageType.RESPONSE, MessageStatus.FAILED),
        record(2, "planner", "planner", MessageType.EVENT, MessageStatus.PENDING),
    ]
    lines = sequence_diagram(records).splitlines()
    assert lines[:2] == ["sequenceDiagram", "autonumber"]
    participants = [line for line in lines if line.startswith("participant ")]
    assert [p.split(" as ")[0] for p in participants] == ["participant P0", "participant P1"]
    arrows = lines[2 + len(participants) :]
    assert arrows == [
        "P0->>P1: QUERY #183; DELIVERED",
        "P1--xP0: RESPONSE #183; FAILED #183; 1 retry",
        "P0-)P0: EVENT #183; PENDING #183; 2 retries",
    ]
    assert all(INERT.fullmatch(p.split(" as ", 1)[1]) for p in participants)
