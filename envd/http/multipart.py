"""Content-Disposition of multipart upload parts, read like Go's mime.ParseMediaType.

aiohttp's own parser strips leading slashes from `filename` (the SDKs send
absolute paths there) and gives up on several `;` inside quotes.
"""

from __future__ import annotations

from urllib.parse import unquote


def filename_of(params: dict[str, str]) -> str | None:
    """The part's `filename` exactly as sent, directories and leading `/` included.

    aiohttp's own parser strips leading slashes (the SDKs send absolute
    paths there) and gives up on several `;` inside quotes, so parse like Go's
    mime.ParseMediaType: quoted strings with backslash escapes, RFC 2231 `filename*`.
    """
    extended = params.get("filename*")
    if extended is not None and extended.count("'") >= 2:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return unquote(encoded, charset or "utf-8", "strict")
        except (LookupError, UnicodeDecodeError):
            pass
    return params.get("filename")


def disposition_params(header: str) -> dict[str, str]:
    _, _, text = header.partition(";")
    params: dict[str, str] = {}
    pos, size = 0, len(text)
    while pos < size:
        while pos < size and text[pos] in " \t;":
            pos += 1
        equals = text.find("=", pos)
        if equals < 0:
            break
        key = text[pos:equals].strip().lower()
        pos = equals + 1
        while pos < size and text[pos] in " \t":
            pos += 1
        if pos < size and text[pos] == '"':
            chars, pos = [], pos + 1
            while pos < size and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < size:
                    pos += 1
                chars.append(text[pos])
                pos += 1
            pos += 1
            value = "".join(chars)
        else:
            end = text.find(";", pos)
            end = size if end < 0 else end
            value, pos = text[pos:end].strip(), end
        params.setdefault(key, value)
    return params
