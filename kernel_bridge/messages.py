"""Kernel message -> NDJSON line mapping (docs/code-interpreter-api.md §3 and §4.8).

Lines are plain dicts until `encode_line`, which is the single place that turns
them into bytes: ASCII-only JSON (docs/code-interpreter-api.md §3.1) so
neither SDK can split a line on U+2028 & co. or corrupt a multi-byte character
across chunks.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

Line = dict[str, Any]

# docs/code-interpreter-api.md §3.4: MIME bundle key -> result key, in upstream's key order.
MIME_TO_FIELD: tuple[tuple[str, str], ...] = (
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
    ("e2b/data", "data"),
    ("e2b/chart", "chart"),
)
_KNOWN_MIMES = {mime for mime, _ in MIME_TO_FIELD}

END_OF_EXECUTION: Line = {"type": "end_of_execution"}
KEEPALIVE: Line = {"type": "keepalive"}

# Server-generated errors (docs/code-interpreter-api.md §3.5).
CONTEXT_RESTARTING = ("ContextRestarting", "Context was restarted")
UNEXPECTED_END = (
    "UnexpectedEndOfExecution",
    "Connection to the execution was closed before the execution was finished",
)
EXECUTION_ABORTED = ("ExecutionAborted", "Execution was aborted")
SEND_FAILED = ("WebSocketError", "Failed to send execution request")


def encode_line(line: Line) -> bytes:
    """One NDJSON line: ASCII JSON, no NaN tokens, trailing newline.

    Never raises: NaN/Infinity (JSON has none; kernels such as Deno may send
    them) become null, and a line that still cannot be encoded is replaced by
    an error line, so one bad value cannot tear the chunked response
    (docs/code-interpreter-api.md §2.2.3).
    """
    try:
        text = json.dumps(line, ensure_ascii=True, allow_nan=False)
    except ValueError:
        try:
            text = json.dumps(_finite(line), ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            text = _unencodable(exc)
    except (TypeError, RecursionError) as exc:
        text = _unencodable(exc)
    return (text + "\n").encode("ascii")


def _finite(value: Any) -> Any:
    """`value` with every NaN/Infinity float replaced by None (what orjson does)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _unencodable(exc: BaseException) -> str:
    line = error_line("EncodingError", f"an output line could not be encoded as JSON: {exc}", "")
    return json.dumps(line, ensure_ascii=True)


def strip_quotes(text: str) -> str:
    """Drop one pair of surrounding quotes, nothing else.

    docs/code-interpreter-api.md §3.4; docs/differences.md §6.3 item 1.
    """
    if text and text[0] == text[-1] and text[0] in ("'", '"'):
        return text[1:-1]
    return text


def format_timestamp(date: Any) -> str:
    """Kernel header date -> ISO-8601 with `+00:00` (docs/code-interpreter-api.md §3.3)."""
    if isinstance(date, _dt.datetime):
        if date.tzinfo is None:
            date = date.replace(tzinfo=_dt.timezone.utc)
        return date.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")
    if isinstance(date, str) and date:
        try:
            return format_timestamp(_dt.datetime.fromisoformat(date.replace("Z", "+00:00")))
        except ValueError:
            return date
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def number_of_executions(count: Any) -> Line:
    """docs/code-interpreter-api.md §3.2."""
    return {"type": "number_of_executions", "execution_count": count}


def stream_line(name: str, text: str, date: Any) -> Line:
    """docs/code-interpreter-api.md §3.3: one line per kernel stream message, never merged or split."""
    return {"type": name, "text": text, "timestamp": format_timestamp(date)}


def result_line(data: dict[str, Any], is_main_result: bool) -> Line:
    """docs/code-interpreter-api.md §3.4: absent keys omitted, unmapped keys into `extra`, nothing else on top."""
    line: Line = {"type": "result"}
    for mime, field in MIME_TO_FIELD:
        if mime in data:
            value = data[mime]
            if field == "text" and isinstance(value, str):
                value = strip_quotes(value)
            line[field] = value
    line["extra"] = {k: v for k, v in data.items() if k not in _KNOWN_MIMES}
    line["is_main_result"] = is_main_result
    return line


def is_followed_at_once(line: Line) -> bool:
    """Lines that a fast run follows within a few milliseconds: the execution count
    (its start) and the main result (its end, bar post-execute hooks). The relay
    may hold these briefly to send them with what follows, in one write."""
    kind = line["type"]
    return kind == "number_of_executions" or (kind == "result" and line.get("is_main_result") is True)


def error_line(name: Any, value: Any, traceback: Any = "") -> Line:
    """docs/code-interpreter-api.md §3.5: all three keys always present; traceback lists joined with no separator."""
    if isinstance(traceback, (list, tuple)):
        traceback = "".join(str(part) for part in traceback)
    return {
        "type": "error",
        "name": "" if name is None else str(name),
        "value": "" if value is None else str(value),
        "traceback": "" if traceback is None else str(traceback),
    }


def server_error(kind: tuple[str, str]) -> Line:
    """A server-generated error line (traceback always empty)."""
    return error_line(kind[0], kind[1], "")


def kernel_error(content: dict[str, Any]) -> Line:
    """IOPub `error` / error `execute_reply` content -> error line."""
    return error_line(content.get("ename"), content.get("evalue"), content.get("traceback") or "")


def map_iopub(msg: dict[str, Any]) -> Line | None:
    """IOPub message of a user request -> line, or None when it maps to nothing.

    `error` is mapped here too; the caller enforces "first error only".
    """
    msg_type = msg.get("header", {}).get("msg_type") or msg.get("msg_type")
    content = msg.get("content", {})
    if msg_type == "execute_input":
        return number_of_executions(content.get("execution_count"))
    if msg_type == "stream":
        name = content.get("name")
        if name in ("stdout", "stderr"):
            return stream_line(name, content.get("text", ""), msg.get("header", {}).get("date"))
        return None
    if msg_type == "execute_result":
        return result_line(content.get("data", {}), True)
    if msg_type == "display_data":
        return result_line(content.get("data", {}), False)
    if msg_type == "error":
        return kernel_error(content)
    return None
