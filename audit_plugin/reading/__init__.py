"""Ways of reading the trail that the command line and the viewer share.

* :mod:`~audit_plugin.reading.threads`: a conversation as a reply tree.
* :mod:`~audit_plugin.reading.ids`: ids as people type them back (a short id, a unique start).
"""

from __future__ import annotations

from audit_plugin.reading.ids import ConversationRef, find_conversation, find_correlation_id, find_message
from audit_plugin.reading.threads import ThreadNode, build_thread, walk

__all__ = [
    "ConversationRef",
    "ThreadNode",
    "build_thread",
    "find_conversation",
    "find_correlation_id",
    "find_message",
    "walk",
]
