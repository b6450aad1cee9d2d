"""Adapters that audit real agent transports, each behind its own pip extra.

Nothing here is imported by ``import audit_plugin``; import the adapter you
need (for example :mod:`audit_plugin.integrations.a2a`) once its extra is
installed.
"""
