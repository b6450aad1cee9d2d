"""Ids as people type them back: a whole id, a unique start of one, or the end of a message id.

Tables print the last 8 characters of a message id
(:func:`~audit_plugin.model.messages.short_id`: message ids are time-ordered,
so their first characters are shared by every message of the same minute)
and cut long correlation ids with ``…``. The command line and the viewer take
each of these back the same way, as git takes a prefix of a commit hash:

1. a whole correlation id names its conversation, a whole message id its message;
2. otherwise the text must be the start of exactly one correlation id or
   message id, or the end of exactly one message id;
3. no match is an :class:`~audit_plugin.exceptions.UnknownIdError`, several an
   :class:`~audit_plugin.exceptions.AmbiguousIdError` listing them.

Matching is literal (``%`` and ``_`` are not wildcards). The records read
while resolving are read as ``actor`` (see :meth:`MessageAuditTrail.query_messages`):
a reader sees them redacted, and the reads are recorded with the page's or
command's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit_plugin.exceptions import AmbiguousIdError, UnknownIdError
from audit_plugin.model import validation as v
from audit_plugin.model.records import AuditQuery, AuditRecord, IdMatches
from audit_plugin.trail import MessageAuditTrail

if TYPE_CHECKING:
    from audit_plugin.model.access import Actor, Reading

    Reader = Actor | str | Reading | None

AMBIGUOUS_SHOWN = 5
"""How many matches an :class:`AmbiguousIdError` names."""


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """The conversation an id names: a correlation id, or a message that belongs to none (``lone``)."""

    correlation_id: str | None
    lone: AuditRecord | None = None

    @property
    def id(self) -> str:
        """The conversation's id as shown: its correlation id, or the lone message's id."""
        if self.correlation_id is not None:
            return self.correlation_id
        assert self.lone is not None
        return self.lone.message_id


def conversation_of(record: AuditRecord) -> ConversationRef:
    """The conversation ``record`` belongs to (itself alone when it has no correlation id)."""
    if record.correlation_id is None:
        return ConversationRef(None, record)
    return ConversationRef(record.correlation_id)


async def find_conversation(trail: MessageAuditTrail, text: str, actor: Reader = None) -> ConversationRef:
    """The conversation ``text`` names: by correlation id, by the id of any message in it, or a unique part of either.

    Raises :class:`UnknownIdError` or :class:`AmbiguousIdError`; text that is
    no id at all (empty, NUL, too long) is an ``InvalidFieldError`` naming ``id``.
    """
    v.check_text("id", text)
    if await trail.query_messages(AuditQuery(correlation_id=text, limit=1), actor=actor):
        return ConversationRef(text)
    record = await trail.get_message(text, actor=actor)
    if record is None:
        found = await unique_match(trail, text, conversations=True)
        if found.correlation_ids:
            return ConversationRef(found.correlation_ids[0])
        record = await _found_message(trail, text, found, "conversation or message", actor)
    return conversation_of(record)


async def find_message(trail: MessageAuditTrail, text: str, actor: Reader = None) -> AuditRecord:
    """The record ``text`` names: a whole message id, a unique start of one, or the end tables show."""
    v.check_text("id", text)
    record = await trail.get_message(text, actor=actor)
    if record is not None:
        return record
    found = await unique_match(trail, text, conversations=False)
    return await _found_message(trail, text, found, "message", actor)


async def find_correlation_id(trail: MessageAuditTrail, text: str, actor: Reader = None) -> str:
    """The correlation id ``text`` names (as :func:`find_conversation` reads it), for a filter.

    Text that names no conversation is kept as it is (a filter on a
    conversation not started yet matches nothing now, and may later); an
    ambiguous one raises :class:`AmbiguousIdError`.
    """
    try:
        found = await find_conversation(trail, text, actor)
    except UnknownIdError:
        return text
    return found.correlation_id if found.correlation_id is not None else text


async def unique_match(trail: MessageAuditTrail, text: str, *, conversations: bool) -> IdMatches:
    """The one id ``text`` is a start (or message-id end) of; correlation ids count only with ``conversations``."""
    found = await trail.find_ids(text, limit=AMBIGUOUS_SHOWN + 1)
    correlation_ids = found.correlation_ids if conversations else []
    total = len(correlation_ids) + len(found.message_ids)
    if total == 0:
        raise UnknownIdError(text, "conversation or message" if conversations else "message")
    if total > 1:
        shown = correlation_ids[:AMBIGUOUS_SHOWN]
        messages = found.message_ids[: AMBIGUOUS_SHOWN - len(shown)]
        raise AmbiguousIdError(text, shown, messages, more=total > AMBIGUOUS_SHOWN)
    return IdMatches(message_ids=found.message_ids, correlation_ids=correlation_ids)


async def _found_message(
    trail: MessageAuditTrail, text: str, found: IdMatches, what: str, actor: Reader
) -> AuditRecord:
    record = await trail.get_message(found.message_ids[0], actor=actor)
    if record is None:  # removed (retention) between the two reads
        raise UnknownIdError(text, what)
    return record
