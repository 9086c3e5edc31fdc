"""Connections that hold a descriptor without doing anything are closed.

Two ways to exhaust the daemon without sending a request: open connections
and send nothing (or a request head one byte at a time), and keep thousands
of kept-alive connections idle. aiohttp only closes either after its
keep-alive timeout (640 s, longer than the SDK's 300 s pool, so the SDK never
reuses a connection the daemon just closed). Here:

* a connection that has not completed a request head within `head_seconds`
  of being accepted is closed (nobody connects to send nothing);
* when more than `max_idle` connections wait between requests, the ones idle
  longest are closed (clients open a new one; a pooled client checks a
  connection before reusing it).

A connection with a request in flight is never touched, however long it
streams: a one-hour command, a watch, a WebSocket relay.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

HEAD_SECONDS = 30.0
MAX_IDLE_CONNECTIONS = 512
SWEEP_SECONDS = 1.0


@dataclass
class _Activity:
    seen: float  # when the sweep first saw the connection, or its last request ended
    requests: int = 0
    in_flight: int = 0


class ConnectionGuard:
    """Watches the connections of the daemon's servers; the middleware marks requests."""

    def __init__(self, head_seconds: float = HEAD_SECONDS, max_idle: int = MAX_IDLE_CONNECTIONS) -> None:
        self.head_seconds = head_seconds
        self.max_idle = max_idle
        self._servers: list[web.Server] = []
        self._activity: dict[RequestHandler, _Activity] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, server: web.Server) -> None:
        self._servers.append(server)
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_forever(), name="connection-guard")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request runs (outermost middleware)."""
        activity = self._activity_of(request.protocol)
        activity.requests += 1
        activity.in_flight += 1
        try:
            return await handler(request)
        finally:
            activity.in_flight -= 1
            activity.seen = asyncio.get_running_loop().time()

    def _activity_of(self, protocol: object) -> _Activity:
        assert isinstance(protocol, RequestHandler)
        activity = self._activity.get(protocol)
        if activity is None:
            activity = self._activity[protocol] = _Activity(asyncio.get_running_loop().time())
        return activity

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.sweep()
            except Exception:  # the guard must never stop guarding
                log.exception("connection sweep failed")

    def sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        live = [handler for server in self._servers for handler in server.connections]
        self._activity = {handler: self._activity_of(handler) for handler in live}
        idle: list[tuple[float, RequestHandler]] = []
        for handler, activity in self._activity.items():
            if activity.in_flight:
                continue
            if not activity.requests and now - activity.seen > self.head_seconds:
                log.info("closing a connection that sent no request in %.0f s", self.head_seconds)
                handler.force_close()
            else:
                idle.append((activity.seen, handler))
        if len(idle) > self.max_idle:
            idle.sort(key=lambda item: item[0])
            for _, handler in idle[: len(idle) - self.max_idle]:
                handler.force_close()
            log.info("closed %d idle connections (over %d)", len(idle) - self.max_idle, self.max_idle)
