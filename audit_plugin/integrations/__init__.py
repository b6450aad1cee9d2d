"""Adapters that audit the buses agents really run on, each behind its own pip extra.

Nothing here is imported by ``import audit_plugin``: import the adapter you
use (``audit_plugin.integrations.faststream``...) and install its extra.
"""
