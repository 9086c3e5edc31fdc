"""`/execute`'s 200 leaves in the same send as the first lines (kernel_bridge/server.py `_HeadersWithBody`).

aiohttp has no public switch for this: `_HeadersWithBody` sets the private
class attribute `web.StreamResponse._send_headers_immediately` (aiohttp 3.12
and later). These tests fail loudly if the installed aiohttp drops that
attribute or stops holding the headers back, instead of the daemon quietly
paying one more send per run.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel_bridge.server import _HeadersWithBody

SILENCE = 0.3  # how long the client listens for bytes that must not come
REQUEST = b"POST /execute HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"


def test_the_private_aiohttp_switch_still_exists():
    assert "_send_headers_immediately" in vars(web.StreamResponse), (
        f"aiohttp {aiohttp.__version__} no longer has StreamResponse._send_headers_immediately: "
        "kernel_bridge.server._HeadersWithBody now sends the /execute headers on their own; "
        "find the new way to hold them back until the first write"
    )
    assert web.StreamResponse._send_headers_immediately is True
    assert _HeadersWithBody._send_headers_immediately is False


async def _exchange(response_class: type[web.StreamResponse], last: bool) -> tuple[bytes, bytes]:
    """Bytes the client got after `prepare` alone, then the whole response after the first write."""
    prepared = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = response_class(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        prepared.set()
        await release.wait()
        if last:
            await response.write_eof(b'{"type": "end_of_execution"}\n')
        else:
            await response.write(b'{"type": "stdout"}\n')
            await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/execute", handler)
    server = TestServer(app)
    await server.start_server()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(REQUEST)
        await asyncio.wait_for(prepared.wait(), timeout=10)
        try:
            early = await asyncio.wait_for(reader.read(65536), timeout=SILENCE)
        except asyncio.TimeoutError:
            early = b""
        release.set()
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), timeout=10)
        return early, early + rest
    finally:
        if writer is not None:
            writer.close()
        await server.close()


@pytest.mark.parametrize("last", [False, True], ids=["write", "write_eof"])
async def test_headers_wait_for_the_first_write(last):
    early, whole = await _exchange(_HeadersWithBody, last)
    assert early == b"", (
        f"aiohttp {aiohttp.__version__} sent the headers at prepare(): "
        "kernel_bridge.server._HeadersWithBody no longer holds them back"
    )
    head, _, body = whole.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding: chunked" in head
    assert (b"end_of_execution" if last else b"stdout") in body


async def test_a_plain_stream_response_sends_its_headers_at_prepare():
    """The control: the check above would notice headers sent early."""
    early, _ = await _exchange(web.StreamResponse, last=False)
    assert early.startswith(b"HTTP/1.1 200 ")
