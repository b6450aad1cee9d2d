"""What the broker does with a consumed message, decided where the audit middleware can see it.

FastStream's acknowledgement middleware is entered first and exits last, so
when an audit middleware finishes, the message is usually not acked yet
(``msg.committed`` is ``None`` unless the handler acked it by hand). The
outcome is therefore inferred the way that middleware will decide it: from
the exception the handler ended with and the subscriber's ``ack_policy``.

======================================  ==========================================
handler ends with                       recorded as
======================================  ==========================================
nothing, ``AckMessage``, or acked       DELIVERED
``NackMessage`` (requeue), or an        a retry: status stays PENDING, the error
error under ``NACK_ON_ERROR``           and attempt go into the lifecycle
``RejectMessage``, an error under any   FAILED, with the error text
other policy, ``NackMessage(requeue=
False)``
``SkipMessage``, cancellation           nothing (the message is not consumed here)
======================================  ==========================================

A hand-made ``nack()``/``reject()`` without an exception counts like the
corresponding exception.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from faststream.exceptions import AckMessage, HandlerException, NackMessage, RejectMessage
from faststream.message import AckStatus
from faststream.middlewares import AckPolicy

from audit_plugin.model.messages import MessageStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """One consume attempt's result: a final status, or a retry (``status`` PENDING)."""

    status: MessageStatus
    error: str | None = None

    @property
    def is_retry(self) -> bool:
        return self.status is MessageStatus.PENDING


DELIVERED = Outcome(MessageStatus.DELIVERED)


def describe(exc: BaseException) -> str:
    """The error text kept in the record: ``"ValueError: bad input"``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def consume_outcome(exc: BaseException | None, committed: AckStatus | None, ack_policy: Any) -> Outcome | None:
    """The outcome of one handler run (see the module table); ``None``: nothing to record."""
    if exc is None:
        if committed is AckStatus.NACKED:
            return Outcome(MessageStatus.PENDING, "nacked by the handler")
        if committed is AckStatus.REJECTED:
            return Outcome(MessageStatus.FAILED, "rejected by the handler")
        return DELIVERED
    if isinstance(exc, HandlerException):
        return _handler_decision(exc)
    if not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError):
        return None  # interrupted (shutdown, cancellation): the broker redelivers or the message is gone
    if ack_policy is AckPolicy.NACK_ON_ERROR:
        return Outcome(MessageStatus.PENDING, describe(exc))
    return Outcome(MessageStatus.FAILED, describe(exc))


def _handler_decision(exc: HandlerException) -> Outcome | None:
    options = getattr(exc, "extra_options", {})
    if isinstance(exc, AckMessage):
        return DELIVERED
    if isinstance(exc, NackMessage):
        if options.get("requeue", True):
            return Outcome(MessageStatus.PENDING, "nacked by the handler")
        return Outcome(MessageStatus.FAILED, "nacked by the handler without requeue")
    if isinstance(exc, RejectMessage):
        if options.get("requeue", False):
            return Outcome(MessageStatus.PENDING, "rejected by the handler with requeue")
        return Outcome(MessageStatus.FAILED, "rejected by the handler")
    return None  # SkipMessage: left for another subscriber
