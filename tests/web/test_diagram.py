"""Mermaid sequence-diagram source: labels from the store are inert, one arrow per message."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin import MessageStatus, MessageType
from audit_plugin.model.records import AuditRecord
from audit_plugin.web.diagram import MAX_LABEL, mermaid_text, sequence_diagram
from audit_plugin.web.sequence_svg import sequence_svg
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


XML_CHARACTERS = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r")
"""What an XML parser can read back (the page itself is HTML, which takes the rest too)."""

SVG_ELEMENTS = {"svg", "defs", "marker", "path", "line", "g", "rect", "text", "a"}


def svg_tree(records: list[AuditRecord]) -> ElementTree.Element:
    hrefs = {r.message_id: f"#m-{index}" for index, r in enumerate(records, start=1)}
    return ElementTree.fromstring(str(sequence_svg(records, hrefs)))


@settings(max_examples=150)
@given(
    agents=st.lists(st.text(XML_CHARACTERS, min_size=1, max_size=60), min_size=1, max_size=4),
    plan=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 3),
            st.sampled_from(list(MessageType)),
            st.sampled_from(list(MessageStatus)),
        ),
        max_size=12,
    ),
)
def test_the_drawn_diagram_is_inert_svg_with_one_linked_arrow_per_message(
    agents: list[str], plan: list[tuple[int, int, MessageType, MessageStatus]]
) -> None:
    records = [
        record(n, agents[s % len(agents)], agents[r % len(agents)], kind, status)
        for n, (s, r, kind, status) in enumerate(plan)
    ]
    tree = svg_tree(records)  # well-formed XML whatever the names
    elements = list(tree.iter())
    assert {element.tag.split("}")[-1] for element in elements} <= SVG_ELEMENTS
    assert not [name for element in elements for name in element.attrib if name.lower().startswith("on")]
    groups = [g for g in elements if g.get("class", "").startswith("message ")]
    assert len(groups) == len(records)
    for index, (group, rec) in enumerate(zip(groups, records, strict=True), start=1):
        assert group.get("class") == f"message s-{rec.status.value.lower()}"
        [link] = [child for child in group if child.tag.endswith("}a")]
        assert link.get("href") == f"#m-{index}"
        label = "".join(link.itertext())
        assert label.startswith(f"{index}. {rec.message_type.value} · {rec.status.value}")
    shown = {"".join(t.itertext()) for t in elements if t.get("class") == "actor"}
    used = {a for rec in records for a in (rec.from_agent, rec.to_agent)}
    assert shown == {a if len(a) <= 40 else a[:39] + "…" for a in used}


def test_arrow_kinds_follow_type_and_status() -> None:
    records = [
        record(0, "planner", "worker", MessageType.QUERY, MessageStatus.DELIVERED),
        record(1, "worker", "planner", MessageType.RESPONSE, MessageStatus.FAILED),
        record(2, "planner", "planner", MessageType.EVENT, MessageStatus.PENDING),
    ]
    lines = [e for e in svg_tree(records).iter() if e.get("class") == "message-line"]
    assert [line.get("marker-end") for line in lines] == ["url(#head-filled)", "url(#head-cross)", "url(#head-open)"]
    assert [line.get("stroke-dasharray") for line in lines] == [None, "6 4", None]  # responses dotted
    assert lines[2].tag.endswith("path")  # a message to oneself loops back
