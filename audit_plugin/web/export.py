"""One conversation as a single self-contained HTML file, to attach to a ticket.

The same view as the conversation page, with the stylesheet, Mermaid and
the page script inlined. The file carries its own Content-Security-Policy
(a ``<meta>`` tag): only the two inline scripts, named by their SHA-256
hashes, may run, and nothing may be fetched. Each message's details
(payload, error, trace link) are in the file, so it reads the same offline.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup

from audit_plugin.records import AuditRecord
from audit_plugin.trail import MessageAuditTrail
from audit_plugin.web.rendering import STATIC, render_text
from audit_plugin.web.views import conversation_context

MERMAID = "vendor/mermaid-12.3.0.min.js"


def script_hash(source: str) -> str:
    """The CSP source expression allowing exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


def file_policy(*scripts: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(script_hash(s) for s in scripts),
            "style-src 'unsafe-inline'",
            "img-src data:",
            "font-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def inline_script(name: str) -> str:
    """A packaged script's text, safe inside ``<script>`` (a ``</script`` could end it early)."""
    source = (STATIC / name).read_text(encoding="utf-8")
    return source.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def conversation_file(trail: MessageAuditTrail, correlation_id: str, records: Sequence[AuditRecord]) -> str:
    """The HTML of the self-contained file of one conversation's ``records`` (oldest first)."""
    records = list(records)
    mermaid_js, app_js = inline_script(MERMAID), inline_script("app.js")
    context = conversation_context(correlation_id, records, standalone=True)
    return render_text(
        "conversation_file.html",
        **context,
        trace_urls={r.message_id: trail.trace_url(r) for r in records},
        csp=file_policy(mermaid_js, app_js),
        css=Markup((STATIC / "app.css").read_text(encoding="utf-8")),
        mermaid_js=Markup(mermaid_js),
        app_js=Markup(app_js),
        store=trail.backend.name,
        exported_at=datetime.now(UTC),
    )
