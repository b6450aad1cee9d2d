"""Query strings to typed filters: the only way a visitor's input reaches the store.

Every search parameter becomes one typed :class:`~audit_plugin.model.records.AuditQuery`
field (or is refused with an error naming it); the query validates itself,
so the view applies exactly the rules every other caller gets. Parameters
keep the ``AuditQuery`` field names, so a URL reads like the query it runs
and can be shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model import validation as v
from audit_plugin.model.records import AuditQuery, AuditRecord

TEXT_FILTERS = ("from_agent", "to_agent", "message_type", "status", "correlation_id", "trace_id")
TIME_FILTERS = ("start_time", "end_time")
FILTERS = (*TEXT_FILTERS, *TIME_FILTERS)

DEFAULT_PAGE = 50
MAX_PAGE = 500
CURSOR_SEPARATOR = "|"


@dataclass(frozen=True, slots=True)
class Search:
    """A parsed search: the query to run (one row more than a page, to know if another follows)."""

    query: AuditQuery
    page_size: int
    given: dict[str, str]
    """The non-empty filter parameters as given (to refill the form and build links)."""

    def next_page_url(self, path: str, last: AuditRecord) -> str:
        """The link to the page after the one ending with ``last``."""
        return f"{path}?{urlencode({**self.given, 'limit': self.page_size, 'cursor': cursor_of(last)})}"

    def first_page_url(self, path: str) -> str:
        return f"{path}?{urlencode({**self.given, 'limit': self.page_size})}"


def cursor_of(record: AuditRecord) -> str:
    """The keyset cursor that resumes after ``record``: its timestamp and message id."""
    return f"{record.timestamp.isoformat()}{CURSOR_SEPARATOR}{record.message_id}"


def parse_time(field: str, text: str) -> datetime:
    """ISO 8601 (``2026-11-29T13:40``, with or without zone; naive is UTC), as the form's inputs send it."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidFieldError(
            field, f"{text!r:.80} is not a date/time (use ISO 8601, e.g. 2026-11-29T13:40:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_int(field: str, text: str, *, minimum: int, maximum: int) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        raise InvalidFieldError(field, f"{text!r:.80} is not a whole number") from None
    return v.check_int(field, number, minimum=minimum, maximum=maximum)  # type: ignore[return-value]


def parse_cursor(text: str) -> tuple[datetime, str]:
    at, separator, message_id = text.partition(CURSOR_SEPARATOR)
    if not separator or not message_id:
        raise InvalidFieldError("cursor", "is not a paging cursor (use the page links)")
    return parse_time("cursor", at), v.check_text("cursor", message_id)  # type: ignore[return-value]


def parse_search(params: Mapping[str, str]) -> Search:
    """The search a query string asks for; raises a typed error naming the bad field.

    Empty parameters (an untouched form field) are no filter; unknown
    parameters are ignored.
    """
    given = {name: params[name].strip() for name in FILTERS if params.get(name, "").strip()}
    fields: dict[str, Any] = {name: given[name] for name in TEXT_FILTERS if name in given}
    if "trace_id" in fields:
        fields["trace_id"] = fields["trace_id"].lower()
    for name in TIME_FILTERS:
        if name in given:
            fields[name] = parse_time(name, given[name])
    page_size = DEFAULT_PAGE
    if params.get("limit", "").strip():
        page_size = parse_int("limit", params["limit"], minimum=1, maximum=MAX_PAGE)
    if params.get("cursor", "").strip():
        fields["before"] = parse_cursor(params["cursor"])
    return Search(AuditQuery(**fields, limit=page_size + 1), page_size, given)
