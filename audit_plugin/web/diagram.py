"""A conversation as Mermaid sequence-diagram source, with every label made inert.

Mermaid renders labels as HTML and reads its own syntax inside them
(``;`` ends a statement, ``%%`` starts a directive, ``#60;`` is an entity),
so no character from the store reaches the source as itself: everything
but letters, digits, spaces and ``.,_-`` is written as a Mermaid entity
code (``#60;`` for ``<``), which Mermaid turns back into that character as
*text*. Agents become ``participant P0 as <label>`` so their names never
take part in the syntax either. One arrow per message, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit_plugin.model.messages import MessageStatus, MessageType
from audit_plugin.model.records import AuditRecord
from audit_plugin.web.format import duration_text

MAX_DIAGRAM_MESSAGES = 300
"""Messages drawn at most; a longer conversation shows its first ones and says so."""

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,_-")
MAX_LABEL = 80


def mermaid_text(text: str, max_length: int = MAX_LABEL) -> str:
    """``text`` as an inert Mermaid label: plain characters as-is, every other one as ``#<code>;``."""
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return "".join(ch if ch in _PLAIN else f"#{ord(ch)};" for ch in text)


def arrow(record: AuditRecord) -> str:
    """Solid arrow for requests, dotted for responses; a cross when it failed or expired, open while pending."""
    dotted = "--" if record.message_type is MessageType.RESPONSE else "-"
    if record.status in (MessageStatus.FAILED, MessageStatus.EXPIRED):
        return dotted + "x"
    if record.status in (MessageStatus.PENDING, MessageStatus.SENT):
        return dotted + ")"
    return dotted + ">>"


def arrow_label(record: AuditRecord) -> str:
    parts = [record.message_type.value, record.status.value]
    if record.delivery_seconds is not None:
        parts.append(duration_text(record.delivery_seconds))
    if record.retry_count:
        parts.append(f"{record.retry_count} {'retry' if record.retry_count == 1 else 'retries'}")
    return " · ".join(parts)


def sequence_diagram(records: Sequence[AuditRecord]) -> str:
    """Mermaid ``sequenceDiagram`` source for ``records`` (chronological), numbered like the table."""
    shown = records[:MAX_DIAGRAM_MESSAGES]
    aliases: dict[str, str] = {}
    for record in shown:
        for agent in (record.from_agent, record.to_agent):
            aliases.setdefault(agent, f"P{len(aliases)}")
    lines = ["sequenceDiagram", "autonumber"]
    lines += [f"participant {alias} as {mermaid_text(agent, 40)}" for agent, alias in aliases.items()]
    for record in shown:
        sender, receiver = aliases[record.from_agent], aliases[record.to_agent]
        lines.append(f"{sender}{arrow(record)}{receiver}: {mermaid_text(arrow_label(record))}")
    return "\n".join(lines)
