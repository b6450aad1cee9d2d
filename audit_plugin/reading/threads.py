"""A conversation as a reply tree, built from its records' ``reply_to`` links.

The tree comes from ``reply_to`` links (request → responses → follow-ups).
A message whose ``reply_to`` is missing, or points outside the conversation,
starts a new branch; branches and replies are in chronological order, so a
conversation without any links reads as a plain timeline. The command line
prints it (``audit-plugin conversation``) and the viewer draws it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from audit_plugin.model.records import AuditRecord


@dataclass(slots=True, eq=False)
class ThreadNode:
    """One record of the tree and the records that reply to it (chronological)."""

    record: AuditRecord
    replies: list[ThreadNode] = field(default_factory=list)


def build_thread(records: Sequence[AuditRecord]) -> list[ThreadNode]:
    """Roots of the reply tree of ``records`` (chronological), each with its replies.

    A link that would close a cycle is ignored, so every record appears exactly once.
    """
    ordered = sorted(records, key=lambda record: (record.timestamp, record.message_id))
    nodes = {record.message_id: ThreadNode(record) for record in ordered}
    parent_of: dict[str, ThreadNode] = {}
    roots: list[ThreadNode] = []
    for node in nodes.values():
        parent = nodes.get(node.record.reply_to or "")
        ancestor = parent
        while ancestor is not None and ancestor is not node:
            ancestor = parent_of.get(ancestor.record.message_id)
        if parent is None or ancestor is node:
            roots.append(node)
        else:
            parent.replies.append(node)
            parent_of[node.record.message_id] = parent
    return roots


def walk(roots: Sequence[ThreadNode]) -> Iterator[tuple[int, ThreadNode]]:
    """Depth-first, pre-order ``(depth, node)``: the order the tree is printed in."""
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, reply) for reply in reversed(node.replies))
