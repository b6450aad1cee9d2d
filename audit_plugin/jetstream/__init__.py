"""The NATS JetStream transport: producers publish audit operations to a stream, ingesters store them.

* Producer: ``MessageAuditTrail("nats://host:4222/<stream>")`` is a write-only
  trail (see :mod:`audit_plugin.jetstream.producer`); the plugin, bus and
  hooks are the same as with a database URL.
* Ingester: :class:`~audit_plugin.jetstream.ingest.JetStreamIngester` (and
  ``audit-plugin ingest``) drains the stream into a SQL store through the
  trail's group-commit writer and acknowledges each operation after its commit.

Needs the ``nats`` extra (``pip install "audit-plugin[nats]"``). Importing
this package does not import ``nats``; its modules that talk to the server do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit_plugin.jetstream.ingest import IngestStats, JetStreamIngester

__all__ = ["IngestStats", "JetStreamIngester"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from audit_plugin.jetstream import ingest

        return getattr(ingest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
