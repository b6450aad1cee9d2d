"""Audit Agent2Agent (A2A) agents built on the a2a-sdk (``pip install "audit-plugin[a2a]"``).

Server side, wrap the agent's executor::

    executor = AuditedAgentExecutor(MyExecutor(), trail, agent=agent_card)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=agent_card)

Client side, add the interceptor and wrap the client (so failed calls are recorded too)::

    audit = AuditClientInterceptor(trail, agent="planner")
    client = audit.wrap(await create_client(url, interceptors=[audit]))

See :mod:`audit_plugin.integrations.a2a.server`, :mod:`~audit_plugin.integrations.a2a.client`
and :mod:`~audit_plugin.integrations.a2a.records` for what is recorded, and docs/integrations.md.
"""

from __future__ import annotations

from audit_plugin.integrations._recording import UNKNOWN_AGENT
from audit_plugin.integrations.a2a.client import AuditClientInterceptor, AuditedClient
from audit_plugin.integrations.a2a.records import FROM_AGENT_HEADER
from audit_plugin.integrations.a2a.server import AuditedAgentExecutor, AuditedEventQueue

__all__ = [
    "FROM_AGENT_HEADER",
    "UNKNOWN_AGENT",
    "AuditClientInterceptor",
    "AuditedAgentExecutor",
    "AuditedClient",
    "AuditedEventQueue",
]
