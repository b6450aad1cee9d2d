"""Ids found from a typed fragment (a start, or the end of a message id) through an index, at any table size.

The command line and the viewer take back the short ids their tables print
(see :mod:`audit_plugin.reading.ids`): the start of an id, or the last
characters of a message id. ``LIKE 'abc%'`` uses a B-tree only in a
bytewise collation and only when the pattern is known at planning time,
and ``LIKE '%abc'`` never does; so each fragment becomes a range over a
bytewise (``COLLATE "C"``) expression, which any plan can read from an index:

* a start: ``id COLLATE "C" >= 'abc' AND id COLLATE "C" < 'abd'``, served by
  the primary key and ``idx_correlation`` (the id columns are bytewise in
  databases made since; in older ones the same query is correct and scans);
* an end: the same over ``reverse(message_id)``, served by
  :data:`REVERSED_ID_INDEX`.

Each range is followed by the exact test, so the answer is the literal
match whatever the collation.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, text
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_plugin.storage.schema import TABLE_NAME

REVERSED_ID_INDEX = "idx_message_id_reversed"
"""The index of ``reverse(message_id)`` (bytewise) that finds a message id by its end."""


async def create_reversed_id_index(conn: AsyncConnection) -> None:
    """Create :data:`REVERSED_ID_INDEX` if it is missing (on a partitioned table, on every partition)."""
    await conn.execute(
        text(f'CREATE INDEX IF NOT EXISTS {REVERSED_ID_INDEX} ON {TABLE_NAME} ((reverse(message_id) COLLATE "C"))')
    )


def starting_with(expression: ColumnElement[str], start: str) -> ColumnElement[bool]:
    """``expression`` starts with ``start`` (literally), as a bytewise range an index on it can serve."""
    bytewise = expression.collate("C")
    bounds = [bytewise >= start]
    above = _above_every_extension(start)
    if above is not None:
        bounds.append(bytewise < above)
    return and_(*bounds, func.starts_with(expression, start))


def ending_with(expression: ColumnElement[str], end: str) -> ColumnElement[bool]:
    """``expression`` ends with ``end`` (literally), through the reversed expression's index."""
    return starting_with(func.reverse(expression), end[::-1])


def _above_every_extension(start: str) -> str | None:
    """The smallest string sorting (bytewise: by code point) after every string that starts with ``start``;
    ``None`` when there is none (``start`` is all U+10FFFF)."""
    for cut in range(len(start), 0, -1):
        point = ord(start[cut - 1]) + 1
        if point == 0xD800:  # surrogates are no characters (UTF-8 cannot hold them): the next one is U+E000
            point = 0xE000
        if point <= 0x10FFFF:
            return start[: cut - 1] + chr(point)
    return None
