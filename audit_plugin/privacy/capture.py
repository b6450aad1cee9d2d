"""Turning a message into what is queued for the store: its record, its payload text, its ledger entry.

:class:`MessageCapture` is a message's one pass from a send path to the
writer's queue: the message is checked (once), its payload captured, its
``message_audit_log`` row built and its lifecycle entry prepared by the
trail's :class:`~audit_plugin.integrity.ledger.Ledger`; the trail queues the result.

:class:`PayloadCapture` is the payload step, in this order:

1. depth check (``PayloadPolicy.max_depth``; a typed error, never a
   ``RecursionError``; reference cycles count as too deep);
2. ``audit_redact`` implementations from the trail's plugin manager, chained;
3. the built-in :class:`~audit_plugin.privacy.redaction.FieldRedactor`;
4. strict JSON serialisation;
5. the size cap (``PayloadPolicy.max_bytes``): ``"reject"`` raises
   :class:`~audit_plugin.exceptions.PayloadTooLargeError`, ``"truncate"``
   stores ``{"$audit": "truncated", "size": ..., "sha256": ...}`` instead;
6. encryption, when the trail has a key provider (see :mod:`audit_plugin.privacy.crypto`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError, PayloadTooLargeError
from audit_plugin.model import validation as v
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.messages import Message, MessageStatus
from audit_plugin.model.records import build_row, check_message
from audit_plugin.privacy.redaction import DEFAULT_SENSITIVE_FIELDS, MASK, FieldRedactor

if TYPE_CHECKING:
    from audit_plugin.integrity.ledger import Ledger, LedgeredRow
    from audit_plugin.integrity.shards import ShardedChains
    from audit_plugin.privacy.crypto import PayloadSealer

OversizePolicy = Literal["reject", "truncate"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Default cap on a serialised payload: 16 MiB."""


@dataclass(frozen=True, slots=True)
class PayloadPolicy:
    """How payloads are checked and protected when a message is recorded.

    :param max_bytes: largest serialised payload (UTF-8 bytes of JSON);
        ``None`` for no cap.
    :param oversize: ``"reject"`` (raise
        :class:`~audit_plugin.exceptions.PayloadTooLargeError`; the message is
        refused) or ``"truncate"`` (store a marker with the size and SHA-256 of
        the payload instead; the message goes on).
    :param max_depth: deepest nesting of dicts/lists accepted (1 to 500).
    :param redact_fields: field names whose values are masked anywhere in the
        payload (case-insensitive; empty to turn the built-in redactor off).
    :param mask: what masked values become.
    """

    max_bytes: int | None = DEFAULT_MAX_BYTES
    oversize: OversizePolicy = "reject"
    max_depth: int = v.DEFAULT_MAX_DEPTH
    redact_fields: frozenset[str] = field(default=DEFAULT_SENSITIVE_FIELDS)
    mask: Any = MASK

    def __post_init__(self) -> None:
        v.check_int("PayloadPolicy.max_bytes", self.max_bytes, minimum=2, optional=True)
        v.check_int("PayloadPolicy.max_depth", self.max_depth, minimum=1, maximum=v.MAX_DEPTH_LIMIT)
        if self.oversize not in ("reject", "truncate"):
            raise InvalidFieldError("PayloadPolicy.oversize", f"{self.oversize!r} is not 'reject' or 'truncate'")
        if isinstance(self.redact_fields, str) or not all(isinstance(name, str) for name in self.redact_fields):
            raise FieldTypeError("PayloadPolicy.redact_fields", "a collection of field names", self.redact_fields)
        object.__setattr__(self, "redact_fields", frozenset(self.redact_fields))


def truncated_marker(text: str, size: int) -> dict[str, Any]:
    return {MARKER_KEY: "truncated", "size": size, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


class PayloadCapture:
    """Applies a :class:`PayloadPolicy` (and the ``audit_redact`` hooks) to each recorded message."""

    def __init__(
        self, manager: pluggy.PluginManager, policy: PayloadPolicy, sealer: PayloadSealer | None = None
    ) -> None:
        self.manager = manager
        self.policy = policy
        self.sealer = sealer
        self.redactor = (
            FieldRedactor(policy.redact_fields, mask=policy.mask, max_depth=policy.max_depth)
            if policy.redact_fields
            else None
        )

    def encode(self, message: Message) -> str:
        """The payload text to store for ``message``; raises a typed error naming ``payload``."""
        payload = message.payload
        implementations = self.manager.hook.audit_redact.get_hookimpls()
        if implementations:
            implementations = [impl for impl in implementations if not (impl.hookwrapper or impl.wrapper)]
        if implementations or self.redactor is None:  # otherwise the redactor's walk is the depth check
            v.check_depth(payload, self.policy.max_depth)
        for impl in reversed(implementations):  # pluggy's own call order
            payload = self._apply(impl, message, payload)
        if self.redactor is not None:
            payload = self.redactor.redact(payload)  # also the depth check (of what the hooks returned)
        text = v.encode_payload(payload, depth_checked=True)
        text = self._capped(text)
        if self.sealer is not None:
            text = self.sealer.seal(message, text)
        return text

    def _apply(self, impl: Any, message: Message, payload: dict[str, Any]) -> dict[str, Any]:
        arguments = {"message": message, "payload": payload}
        result = impl.function(**{name: arguments[name] for name in impl.argnames})
        if result is None:
            return payload
        if not isinstance(result, dict):
            raise FieldTypeError(f"audit_redact result of plugin {impl.plugin_name!r}", "dict or None", result)
        if result is not payload:
            v.check_depth(result, self.policy.max_depth)
        return result

    def _capped(self, text: str) -> str:
        limit = self.policy.max_bytes
        if limit is None or len(text) * 4 <= limit:  # UTF-8 takes at most 4 bytes per character
            return text
        size = len(text.encode("utf-8"))
        if size <= limit:
            return text
        if self.policy.oversize == "reject":
            raise PayloadTooLargeError("payload", size, limit)
        return v.encode_json(truncated_marker(text, size))


class MessageCapture:
    """Builds what the trail queues for a message, in one pass: checked message, payload text, row, ledger entry.

    :param payloads: the trail's payload step (policy, ``audit_redact`` rules, encryption).
    :param ledger: the trail's chains or ledger (the row's lifecycle entry and, when hashing, its digest).
    """

    def __init__(self, payloads: PayloadCapture, ledger: Ledger | ShardedChains) -> None:
        self.payloads = payloads
        self.ledger = ledger

    def row(
        self,
        message: Message,
        *,
        status: MessageStatus = MessageStatus.PENDING,
        trace_id: str | None = None,
        span_id: str | None = None,
        fallback: bool = False,
    ) -> LedgeredRow:
        """The ledgered ``message_audit_log`` row of ``message``, ready for the writer's queue.

        Raises a typed error naming the field for anything that cannot be
        stored, before anything is queued. ``fallback``: the row is stored only
        if its message has no record yet (see :class:`~audit_plugin.integrity.ledger.FallbackRow`).
        """
        check_message(message)
        row = build_row(message, self.payloads.encode(message), status=status, trace_id=trace_id, span_id=span_id)
        return self.ledger.ledgered(row, fallback=fallback)
