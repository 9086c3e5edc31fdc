"""User metadata stored as extended attributes `user.e2b.<key>` (docs/envd-api.md §4.12, §6.8).

Reading never fails a request: metadata is decoration on an entry, so any
attribute that cannot be read (unsupported filesystem, vanished, not UTF-8)
is simply left out.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

PREFIX = "user.e2b."

MAX_KEY_BYTES = 246
MAX_TOTAL_BYTES = 4096
#: Per-key overhead upstream counts towards the total (the `user.e2b.` prefix).
KEY_OVERHEAD = len(PREFIX)

_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP}


class MetadataError(ValueError):
    """Metadata headers that upstream would reject (`400 invalid metadata: ...`)."""


def read_metadata(target: str | int) -> dict[str, str]:
    """The `user.e2b.*` attributes of a path (following symlinks) or open fd."""
    try:
        names = os.listxattr(target)
    except OSError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        if not name.startswith(PREFIX):
            continue
        try:
            found[name[len(PREFIX) :]] = os.getxattr(target, name).decode()
        except (OSError, UnicodeDecodeError):
            continue
    return found


def replace_metadata(fd: int, new: Mapping[str, str]) -> None:
    """Make the file's `user.e2b.*` set exactly `new`.

    Touches nothing when there is nothing to remove or set: every xattr call
    is an IN_ATTRIB a watcher would report as an extra CHMOD. Filesystems
    without xattrs are tolerated; other OSErrors propagate.
    """
    try:
        current = [n for n in os.listxattr(fd) if n.startswith(PREFIX)]
        for name in current:
            if name[len(PREFIX) :] not in new:
                os.removexattr(fd, name)
        for key, value in new.items():
            os.setxattr(fd, PREFIX + key, value.encode())
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return
        raise


def metadata_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Collect `X-Metadata-<key>` headers: key lower-cased, first value wins."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        if not name.lower().startswith("x-metadata-"):
            continue
        key = name[len("x-metadata-") :].lower()
        if key and key not in found:
            found[key] = value
    validate_metadata(found)
    return found


def validate_metadata(metadata: Mapping[str, str]) -> None:
    """Upstream's limits: printable ASCII, short keys, 4 KiB in total."""
    total = 0
    for key, value in metadata.items():
        if not key:
            raise MetadataError("key must not be empty")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise MetadataError(f"key {key!r} is longer than {MAX_KEY_BYTES} bytes")
        if not _printable_ascii(key):
            raise MetadataError(f"key {key!r} contains characters outside 0x20-0x7E")
        if not _printable_ascii(value):
            raise MetadataError(f"value of key {key!r} contains characters outside 0x20-0x7E")
        total += KEY_OVERHEAD + len(key) + len(value.encode())
    if total > MAX_TOTAL_BYTES:
        raise MetadataError(f"total size {total} exceeds {MAX_TOTAL_BYTES} bytes")


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in text)
