"""Hooks: what puts the trail under a bus — the plugin, the reference bus, durability and the shared options.

Owns :mod:`~audit_plugin.hooks.plugin` (``AuditPlugin``, the hook
implementations a bus registers), :mod:`~audit_plugin.hooks.bus` (the
reference in-process ``MessageBus`` and ``call_hook``),
:mod:`~audit_plugin.hooks.durability` (how a sender waits for the store),
:mod:`~audit_plugin.hooks.options` (``AuditOptions``, taken by every recorder:
the plugin, and every integration) and :mod:`~audit_plugin.hooks.deadlines`.
"""

from __future__ import annotations

from audit_plugin.hooks.bus import MessageBus, call_hook
from audit_plugin.hooks.durability import CommitWaits
from audit_plugin.hooks.options import AuditOptionFields, AuditOptions, Durability
from audit_plugin.hooks.plugin import AuditPlugin

__all__ = ["AuditOptionFields", "AuditOptions", "AuditPlugin", "CommitWaits", "Durability", "MessageBus", "call_hook"]
