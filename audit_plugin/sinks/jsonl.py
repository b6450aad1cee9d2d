"""JSON Lines: one event document per line, appended to a file or written to standard output.

For log shippers that tail files (Vector's ``file`` source, Fluent Bit's
``tail`` input) or read a process's output. Each send is written and flushed
as a whole (``fsync=true`` also syncs it to disk). A file moved away by log
rotation (``logrotate`` with ``create``) is noticed before the next write
and a new one opened under the name; with ``copytruncate`` nothing needs
noticing. The reader of standard output going away ends the export
(:class:`~audit_plugin.exceptions.DestinationGoneError`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from audit_plugin.exceptions import DestinationGoneError
from audit_plugin.sinks.address import JsonLinesAddress
from audit_plugin.sinks.documents import json_line


class JsonLinesSender:
    """Appends event documents to one file (or standard output) as JSON Lines."""

    def __init__(self, address: JsonLinesAddress) -> None:
        self.address = address
        self._file: IO[str] | None = None
        self._inode: tuple[int, int] | None = None

    async def send(self, documents: Sequence[dict[str, Any]]) -> None:
        text = "".join(json_line(document) + "\n" for document in documents)
        await asyncio.to_thread(self._write, text)

    def _write(self, text: str) -> None:
        if self.address.path is None:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                raise DestinationGoneError("the reader of standard output went away") from None
            return
        stream = self._open()
        stream.write(text)
        stream.flush()
        if self.address.fsync:
            os.fsync(stream.fileno())

    def _open(self) -> IO[str]:
        """The file, reopened when log rotation moved it away (another file, or none, under its name)."""
        assert self.address.path is not None
        try:
            now = os.stat(self.address.path)
            current: tuple[int, int] | None = (now.st_dev, now.st_ino)
        except FileNotFoundError:
            current = None
        if self._file is not None and current != self._inode:
            self._file.close()
            self._file = None
        if self._file is None:
            self._file = open(self.address.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 (kept open)
            opened = os.fstat(self._file.fileno())
            self._inode = (opened.st_dev, opened.st_ino)
        return self._file

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
