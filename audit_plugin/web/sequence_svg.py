"""A conversation's sequence diagram drawn as SVG on the server, for the self-contained file.

The viewer draws the diagram in the browser with Mermaid; a file attached to
a ticket should not carry a 5 MB diagram library to draw six arrows, so it
gets the drawing itself: one lifeline per agent, one numbered arrow per
message in order, the same labels as the Mermaid diagram
(:func:`~audit_plugin.web.diagram.arrow_label`) and the same arrow kinds
(solid request, dotted response, a cross for failed or expired, an open head
while not delivered). Each arrow links to its message's details in the file.
Every text from the store is escaped (it is XML text, never markup), and
nothing in the drawing runs: no script, no event attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from audit_plugin.model.messages import MessageStatus, MessageType
from audit_plugin.model.records import AuditRecord
from audit_plugin.web.diagram import MAX_DIAGRAM_MESSAGES, arrow_label

CHAR_WIDTH = 7.4
"""Estimated width of one character of the 13 px labels (no font metrics on the server)."""
ACTOR_HEIGHT = 34
ROW = 38
MARGIN = 12
MIN_GAP = 150
MAX_GAP = 460
MAX_AGENT_LABEL = 40
LOOP_WIDTH = 36

COLOURS = {
    MessageStatus.DELIVERED: "#137a3f",
    MessageStatus.FAILED: "#b42318",
    MessageStatus.EXPIRED: "#9a5b00",
    MessageStatus.PENDING: "#4b5565",
    MessageStatus.SENT: "#4b5565",
}

DEFS = (
    "<defs>"
    '<marker id="head-filled" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
    'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker>'
    '<marker id="head-open" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
    'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10" fill="none" stroke="context-stroke" stroke-width="1.5"/>'
    "</marker>"
    '<marker id="head-cross" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="10" markerHeight="10">'
    '<path d="M1,1 L9,9 M9,1 L1,9" stroke="context-stroke" stroke-width="2"/></marker>'
    "</defs>"
)


def _xml_text(text: str) -> Markup:
    """``text`` as XML character data: escaped, and a carriage return kept as ``&#13;`` (an XML parser
    reads a literal one as a line feed)."""
    return Markup(str(escape(text)).replace("\r", "&#13;"))


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _head(record: AuditRecord) -> str:
    if record.status in (MessageStatus.FAILED, MessageStatus.EXPIRED):
        return "head-cross"
    if record.status in (MessageStatus.PENDING, MessageStatus.SENT):
        return "head-open"
    return "head-filled"


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def sequence_svg(records: Sequence[AuditRecord], hrefs: Mapping[str, str]) -> Markup:
    """An ``<svg>`` of ``records`` (chronological; the first :data:`MAX_DIAGRAM_MESSAGES`), linked by ``hrefs``."""
    shown = list(records[:MAX_DIAGRAM_MESSAGES])
    agents = list(dict.fromkeys(agent for r in shown for agent in (r.from_agent, r.to_agent)))
    labels = [f"{number}. {arrow_label(r)}" for number, r in enumerate(shown, start=1)]
    names = [_cut(agent, MAX_AGENT_LABEL) for agent in agents]
    actor_width = max([_text_width(name) + 24 for name in names] or [80])
    gap = min(MAX_GAP, max(MIN_GAP, actor_width + 16, *(_text_width(label) + 30 for label in labels)))
    x = {agent: MARGIN + actor_width / 2 + index * gap for index, agent in enumerate(agents)}
    loops = any(r.from_agent == r.to_agent for r in shown)
    width = MARGIN * 2 + actor_width + gap * max(len(agents) - 1, 0) + (gap if loops else 0)
    body_top = MARGIN + ACTOR_HEIGHT + 16
    bottom = body_top + ROW * len(shown) + 8
    height = bottom + ACTOR_HEIGHT + MARGIN

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="Sequence diagram of the conversation" '
        'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="13">',
        DEFS,
    ]
    for agent, name in zip(agents, names, strict=True):
        centre = x[agent]
        parts.append(
            f'<line class="lifeline" x1="{centre:.1f}" y1="{MARGIN + ACTOR_HEIGHT}" x2="{centre:.1f}" y2="{bottom}" '
            'stroke="#c3c9d4" stroke-dasharray="4 4"/>'
        )
        for top in (MARGIN, bottom):
            parts.append(
                f'<g class="actor-box"><rect x="{centre - actor_width / 2:.1f}" y="{top}" width="{actor_width:.1f}" '
                f'height="{ACTOR_HEIGHT}" rx="5" fill="#eef1f6" stroke="#9aa3b2"/>'
                f'<text class="actor" x="{centre:.1f}" y="{top + ACTOR_HEIGHT / 2 + 4.5:.1f}" text-anchor="middle" '
                f'font-size="14">{_xml_text(name)}</text></g>'
            )
    for index, (record, label) in enumerate(zip(shown, labels, strict=True)):
        y = body_top + ROW * index + ROW - 10
        start, end = x[record.from_agent], x[record.to_agent]
        colour = COLOURS.get(record.status, "#4b5565")
        dash = ' stroke-dasharray="6 4"' if record.message_type is MessageType.RESPONSE else ""
        head = f' marker-end="url(#{_head(record)})"'
        if start == end:
            shape = (
                f'<path class="message-line" d="M{start:.1f},{y - 12} h{LOOP_WIDTH} v12 h-{LOOP_WIDTH - 2}" '
                f'fill="none" stroke="{colour}" stroke-width="1.6"{dash}{head}/>'
            )
            label_x, anchor = start + LOOP_WIDTH + 6, "start"
        else:
            shape = (
                f'<line class="message-line" x1="{start:.1f}" y1="{y}" x2="{end:.1f}" y2="{y}" stroke="{colour}" '
                f'stroke-width="1.6"{dash}{head}/>'
            )
            label_x, anchor = (start + end) / 2, "middle"
        href = hrefs.get(record.message_id)
        link_open = f'<a href="{escape(href)}">' if href else ""
        parts.append(
            f'<g class="message s-{record.status.value.lower()}">{link_open}{shape}'
            f'<text class="message-label" x="{label_x:.1f}" y="{y - 6}" text-anchor="{anchor}" fill="{colour}">'
            f"{_xml_text(label)}</text>{'</a>' if href else ''}</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
