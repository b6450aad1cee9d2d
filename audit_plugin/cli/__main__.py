"""``python -m audit_plugin.cli``: the same as the ``audit-plugin`` script."""

from __future__ import annotations

from audit_plugin.cli import main

main()
