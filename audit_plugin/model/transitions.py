"""How status updates meet a message's stored status: a final status stays, an operation applies once.

Real brokers deliver at least once and out of order: a consumer's outcome
can be redelivered after a lost acknowledgement, a producer's late report can
arrive after the consumer's, two consumers can both process one message.
The store keeps the first final outcome and the full story:

* an update reported once the message's status is final (DELIVERED, FAILED,
  EXPIRED) is not applied; it is appended to the lifecycle as a ``"late"``
  entry, so the evidence stays (a second processing, a conflicting outcome)
  while the row, and the status the chain vouches for, keep the first outcome;
* an update whose ``operation_id`` the message already holds (stored, or
  earlier in the same batch) is dropped: no row change, no entry;
* updates of a message that is not stored are dropped (the caller learns
  ``False``).

These are pure functions over one write batch; the SQL backends supply what
only the database knows (which messages are stored, which of them are final,
which operation ids they hold) from inside the write transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence

from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import StatusUpdate

APPLIED = "status"
"""Entry kind of an update that changed the message's row."""
LATE = "late"
"""Entry kind of an update reported after the message's status was final: recorded, not applied."""

FINAL_STATUS_VALUES: frozenset[str] = frozenset(status.value for status in MessageStatus if status.is_final)
"""Stored ``status`` values after which no update applies."""


def operations(updates: Sequence[StatusUpdate]) -> set[tuple[str, str]]:
    """The ``(message_id, operation_id)`` pairs ``updates`` carry."""
    return {(u.message_id, u.operation_id) for u in updates if u.operation_id is not None}


def distinct_operations(
    updates: Sequence[StatusUpdate], applied: Container[tuple[str, str]] = frozenset()
) -> Sequence[StatusUpdate]:
    """``updates`` without repeated operations: those ``applied`` already, and repeats within ``updates``.

    The first of several updates with one ``(message_id, operation_id)`` is
    kept; updates without an ``operation_id`` are always kept.
    """
    seen: set[tuple[str, str]] = set()
    kept: list[StatusUpdate] = []
    for update in updates:
        if update.operation_id is not None:
            key = (update.message_id, update.operation_id)
            if key in seen or key in applied:
                continue
            seen.add(key)
        kept.append(update)
    return updates if len(kept) == len(updates) else kept


def entry_kinds(
    updates: Sequence[StatusUpdate],
    *,
    final_rows: Collection[str],
    inserted: Collection[str],
    opened: Collection[str],
    stored: Collection[str],
) -> list[str | None]:
    """Each update's lifecycle entry: :data:`APPLIED`, :data:`LATE`, or ``None`` (message not stored).

    What the status was before the batch decides: a message ``inserted`` by
    the batch starts from its row (final if in ``final_rows``); one whose
    update was applied to a stored non-final row is in ``opened``; any other
    ``stored`` message was final. From there, updates apply in order until
    the first final one; the rest are late.
    """
    final: dict[str, bool | None] = {}
    kinds: list[str | None] = []
    for update in updates:
        message_id = update.message_id
        if message_id not in final:
            if message_id in inserted:
                final[message_id] = message_id in final_rows
            elif message_id in opened:
                final[message_id] = False
            else:
                final[message_id] = True if message_id in stored else None
        state = final[message_id]
        if state is None:
            kinds.append(None)
        elif state:
            kinds.append(LATE)
        else:
            kinds.append(APPLIED)
            if update.status.is_final:
                final[message_id] = True
    return kinds
