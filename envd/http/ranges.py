"""Range, If-Range and If-Modified-Since of downloads, as Go's file server reads them."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from aiohttp import web

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """`bytes=a-b, c-, -n` as half-open (start, end) pairs, as Go's file server reads them.

    None: unsatisfiable or malformed (416). Ranges starting past the end are
    dropped; an empty list means "send the whole file", also when the ranges
    add up to more than the file (Go's guard against amplified responses).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    ranges = []
    for item in spec.split(","):
        if not item.strip():
            continue
        match = _RANGE.match(item)
        if match is None:
            return None
        first, last = match.groups()
        if first == "":
            if last == "":
                return None
            if int(last) == 0:
                continue  # `-0`: nothing of the file
            ranges.append((max(size - int(last), 0), size))
            continue
        start = int(first)
        if last != "" and int(last) < start:
            return None
        if start >= size:
            continue  # begins past the end: does not overlap
        ranges.append((start, size if last == "" else min(int(last) + 1, size)))
    if not ranges:
        return None
    if sum(end - start for start, end in ranges) > size:
        return []
    return ranges


def not_modified(request: web.Request, mtime: float) -> bool:
    value = request.headers.get("If-Modified-Since")
    if not value or "If-None-Match" in request.headers:
        return False
    try:
        since = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since


def if_range_matches(request: web.Request, last_modified: str) -> bool:
    value = request.headers.get("If-Range")
    return value is None or value.strip() == last_modified
