"""Output flow control in the Python kernel, installed before its streams exist.

Run by `ipython_kernel_config.py` at config load: IPython captures each
stream's `write` when a cell starts, so a later patch would be bypassed.

* ipykernel gathers 0.2 s of output into one IOPub message; for a fast
  printer that is hundreds of MB the daemon would have to hold at once. Here
  a write is flushed in pieces of about `OUTPUT_MESSAGE_CHARS`, and a flush
  from the writing thread waits for IOPub, so a printer faster than its
  reader slows down instead of buffering without end.
* IPython 9 keeps every cell's stdout and stderr in `history_manager.outputs`
  for the kernel's whole life: a cell printing 200 MB would hold 200 MB until
  the kernel dies. Nothing here uses that record (the SDK gets output as it
  streams), so it is not kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: Output characters one stream message carries at most.
OUTPUT_MESSAGE_CHARS = 1 << 20


def install() -> None:
    from ipykernel.iostream import OutStream
    from IPython.core.interactiveshell import InteractiveShell

    # Patching these classes is the point; mypy refuses assignments to methods.
    OutStream.write = _flushing_in_pieces(OutStream.write)  # type: ignore[method-assign]
    InteractiveShell._tee = _no_output_record  # type: ignore[method-assign]


def _flushing_in_pieces(write: Any) -> Any:
    def flushing_write(self: Any, string: str) -> Any:
        if not isinstance(string, str):
            return write(self, string)  # the stream's own TypeError
        pending = getattr(self, "_e2b_pending", 0) + len(string)
        if pending < OUTPUT_MESSAGE_CHARS:
            self._e2b_pending = pending
            return write(self, string)
        for start in range(0, len(string), OUTPUT_MESSAGE_CHARS):
            write(self, string[start : start + OUTPUT_MESSAGE_CHARS])
            self.flush()
        self._e2b_pending = 0
        return len(string)

    flushing_write.__doc__ = write.__doc__
    return flushing_write


@contextlib.contextmanager
def _no_output_record(self: Any, channel: str) -> Iterator[None]:
    yield


if __name__ == "__e2b_kernel_output__":
    install()
