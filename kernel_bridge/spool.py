"""An execution's output lines on their way to a client that may read slowly.

A kernel cannot be paused: its IOPub socket drops messages once its queue is
full, so the daemon must take output as fast as the kernel makes it, and a
client reading slower would otherwise make the daemon hold everything in
memory (E2B's own server grows by hundreds of MB for 200 MB printed). Here up
to `MEMORY_BYTES` of lines wait in memory; beyond that they are encoded and
appended to an unlinked temporary file, and read back in order as the client
catches up. Nothing is dropped; memory stays bounded. If the disk cannot take
them, lines stay in memory (the per-execution output cap still applies).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from typing import IO

from kernel_bridge import messages
from kernel_bridge.inbox import Waitable
from kernel_bridge.messages import Line

log = logging.getLogger(__name__)

#: Bytes of output text kept in memory before lines go to disk.
MEMORY_BYTES = 4 * 1024 * 1024


class OutputSpool(Waitable):
    """Lines in arrival order for one consumer: the oldest in memory, the rest on disk."""

    def __init__(self, memory_bytes: int = MEMORY_BYTES) -> None:
        self._memory: deque[Line] = deque()
        self._memory_limit = memory_bytes
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._written = 0  # file offset of the next spilled line
        self._read = 0  # file offset of the next byte to send
        self._spilled_lines = 0  # lines in the file not yet sent in full
        self.ended = False  # END_OF_EXECUTION was put

    def __len__(self) -> int:
        return len(self._memory) + self._spilled_lines

    def __iter__(self) -> Iterator[Line]:
        """The lines waiting in memory (the oldest ones)."""
        return iter(self._memory)

    @property
    def finished(self) -> bool:
        """Everything, including the end of the execution, has been taken."""
        return self.ended and not self

    def put(self, line: Line) -> None:
        if line is messages.END_OF_EXECUTION:
            self.ended = True
        size = _size(line)
        if self._read == self._written and self._memory_bytes + size <= self._memory_limit:
            self._keep(line, size)
        elif not self._spill(line):
            self._keep(line, size)
        self._wake()

    def take(self, max_bytes: int) -> bytes:
        """Encoded lines, oldest first, about `max_bytes` of them (at least one line's worth)."""
        chunks: list[bytes] = []
        size = 0
        while self._memory and (not chunks or size < max_bytes):
            line = self._memory.popleft()
            self._memory_bytes -= _size(line)
            encoded = messages.encode_line(line)
            chunks.append(encoded)
            size += len(encoded)
        if not self._memory and self._read < self._written and size < max_bytes:
            chunks.append(self._read_spilled(max_bytes - size))
        return b"".join(chunks)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _keep(self, line: Line, size: int) -> None:
        self._memory.append(line)
        self._memory_bytes += size

    def _spill(self, line: Line) -> bool:
        """Append `line` to the file; False if the disk would not take it."""
        encoded = messages.encode_line(line)
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="envd-output-")
            os.pwrite(self._file.fileno(), encoded, self._written)
        except OSError as exc:
            log.warning("output kept in memory: could not spool it to disk: %s", exc)
            return False
        self._written += len(encoded)
        self._spilled_lines += 1
        return True

    def _read_spilled(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the file (lines may be cut: the client reads a byte stream)."""
        assert self._file is not None
        data = os.pread(self._file.fileno(), min(max_bytes, self._written - self._read), self._read)
        self._read += len(data)
        self._spilled_lines -= data.count(b"\n")
        if self._read == self._written:  # all sent: reuse the file from its start
            self._file.truncate(0)
            self._read = self._written = 0
            self._spilled_lines = 0
        return data


def _size(line: Line) -> int:
    """About how many bytes a line holds: its strings, one level of nesting deep."""
    size = 64
    for value in line.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, dict):
            size += sum(len(v) for v in value.values() if isinstance(v, str))
    return size
