"""``AuditOptions``: how every recorder waits for the store and traces what it records, in one value.

:class:`~audit_plugin.AuditPlugin`, the FastStream middleware, the A2A
client interceptor and executor, and the agent-framework adapters all take
the same options, either as one value or as keywords of the same names::

    options = AuditOptions(durability="buffered", tracer_provider=provider)
    bus.register(AuditPlugin(trail, options=options))
    broker = RedisBroker(url, middlewares=[AuditMiddleware(trail, agent="billing", options=options)])
    AuditPlugin(trail, durability="buffered")           # the same as AuditOptions(durability="buffered")
    AuditPlugin(trail, options=options, trace_payload=True)   # keywords override the value's fields

The value is checked when it is made, so a bad option fails where it is
written, with the option's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from audit_plugin.exceptions import FieldTypeError, InvalidFieldError
from audit_plugin.model.validation import check_seconds

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

Durability = Literal["commit", "buffered"]
"""``"commit"``: a sender awaits its record's commit (write-ahead); ``"buffered"``: it queues and goes on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditOptions:
    """What every recorder of messages shares (see the module docs).

    :param durability: ``"commit"`` (default: a send, publish or ack waits
        until its record is committed, at most ``commit_timeout``) or
        ``"buffered"`` (queue and go on; the writer commits in the background).
    :param commit_timeout: seconds a sender waits on the store (for a commit
        in ``"commit"`` mode, for queue space under the ``"block"`` overflow
        policy) before going on without it; ``None``: wait forever.
    :param tracer_provider: where the PRODUCER/CONSUMER spans go (the global
        provider by default; ``opentelemetry.trace.NoOpTracerProvider()`` for none).
    :param meter_provider: for the messaging metrics and the audit pipeline's
        health metrics (the global provider by default).
    :param trace_payload: also put the JSON payload in the send span
        (``messaging.audit_plugin.payload``). Off by default: payloads often
        hold personal data, and a trace backend is not an audit store.
    """

    durability: Durability = "commit"
    commit_timeout: float | None = 30.0
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    trace_payload: bool = False

    def __post_init__(self) -> None:
        if self.durability not in ("commit", "buffered"):
            raise InvalidFieldError("durability", f"{self.durability!r} is not 'commit' or 'buffered'")
        check_seconds("commit_timeout", self.commit_timeout, optional=True)
        if not isinstance(self.trace_payload, bool):
            raise FieldTypeError("trace_payload", "bool", self.trace_payload)

    @classmethod
    def resolve(cls, options: AuditOptions | None, overrides: Mapping[str, Any]) -> AuditOptions:
        """``options`` (default: all defaults) with ``overrides`` (keywords named as its fields) applied."""
        if options is not None and not isinstance(options, AuditOptions):
            raise FieldTypeError("options", "AuditOptions", options)
        unknown = sorted(set(overrides) - OPTION_NAMES)
        if unknown:
            names = ", ".join(sorted(OPTION_NAMES))
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (the options are {names})")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base


class AuditOptionFields(TypedDict, total=False):
    """The fields of :class:`AuditOptions` as keyword arguments (``**overrides: Unpack[AuditOptionFields]``)."""

    durability: Durability
    commit_timeout: float | None
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    trace_payload: bool


OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(AuditOptions))
