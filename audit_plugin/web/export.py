"""One conversation as a single self-contained HTML file, to attach to a ticket.

The same view as the conversation page, with the stylesheet inlined and the
sequence diagram drawn ahead as SVG (:mod:`audit_plugin.web.sequence_svg`),
so the file needs no script at all and stays a few kilobytes plus the
payloads. It carries its own Content-Security-Policy (a ``<meta>`` tag): no
script may run and nothing may be fetched. Each message's details (payload,
error, trace link) are in the file, so it reads the same offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup

from audit_plugin.model.records import AuditRecord
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.rendering import STATIC, render_text
from audit_plugin.web.sequence_svg import sequence_svg
from audit_plugin.web.views import conversation_context

FILE_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
"""The file's Content-Security-Policy: its inline stylesheet and nothing else."""


def conversation_file(trail: MessageAuditTrail, correlation_id: str, records: Sequence[AuditRecord]) -> str:
    """The HTML of the self-contained file of one conversation's ``records`` (oldest first)."""
    records = list(records)
    context = conversation_context(correlation_id, records, standalone=True)
    return render_text(
        "conversation_file.html",
        **context,
        diagram_svg=sequence_svg(records, context["hrefs"]),
        trace_urls={r.message_id: trail.trace_url(r) for r in records},
        csp=FILE_POLICY,
        css=Markup((STATIC / "app.css").read_text(encoding="utf-8")),
        store=trail.backend.name,
        exported_at=datetime.now(UTC),
    )
