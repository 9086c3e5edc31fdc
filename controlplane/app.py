"""Assembly: store, backend, lifecycle, REST API and proxy in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from controlplane import relay
from controlplane.api import Api
from controlplane.backend import DockerBackend, EngineError, find_engine_url
from controlplane.config import Settings
from controlplane.lifecycle import Manager
from controlplane.proxy import Proxy
from controlplane.records import Store
from controlplane.relay import Router
from controlplane.tls import ensure_certificates

log = logging.getLogger(__name__)
T = TypeVar("T")


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = DockerBackend(find_engine_url(settings.engine_url), settings.state_dir, settings.instance_id)
        self.store = Store(settings.state_dir)
        self.manager = Manager(settings, self.store, self.backend)
        self._runners: list[web.AppRunner] = []
        self._relays: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        await self._check_templates()
        await self.manager.start()
        await self._serve(Api(self.settings, self.manager).app(), self.settings.api_port)
        await self._relay(Proxy(self.manager).route, self.settings.proxy_port)
        if self.settings.tls_port:
            certificates = ensure_certificates(os.path.join(self.settings.state_dir, "tls"), self.settings.domain)
            # `api.<domain>` is relayed to the API listener, every other name to its sandbox.
            host_routed = Proxy(self.manager, api_host=self.settings.hosts[0], api_port=self.settings.api_port)
            await self._relay(host_routed.route, self.settings.tls_port, certificates.server_context())
            log.info(
                "domain mode: E2B_DOMAIN=%s SSL_CERT_FILE=%s", self.settings.public_domain, certificates.client_bundle
            )

    async def _check_templates(self) -> None:
        for template in self.settings.templates:
            if not await self.backend.image_present(template.image):
                log.warning(
                    "template %s: image %s is not present; build it (packaging/build-image.sh --tag %s) "
                    "or map the template to another image",
                    template.id,
                    template.image,
                    template.image,
                )

    async def _serve(self, app: web.Application, port: int) -> None:
        """The REST API on every configured address (loopback over IPv4 and IPv6 by default)."""
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=620)
        await runner.setup()
        self._runners.append(runner)
        for host in self.settings.hosts:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            if await _listening(_started(site), host, port):
                log.info("listening on %s", site.name)

    async def _relay(self, router: Router, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """The proxy on every configured address."""
        for host in self.settings.hosts:
            server = await _listening(relay.serve(router, host, port, ssl_context=ssl_context), host, port)
            if server is not None:
                self._relays.append(server)
                log.info("proxy listening on %s:%d%s", host, port, " (TLS)" if ssl_context else "")

    async def stop(self) -> None:
        for server in self._relays:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        await self.manager.stop()
        self.store.close()
        self.backend.close()


async def _started(site: web.TCPSite) -> web.TCPSite:
    await site.start()
    return site


async def _listening(start: Awaitable[T], host: str, port: int) -> T | None:
    """Start a listener; a missing IPv6 loopback is only logged."""
    try:
        return await start
    except OSError as exc:
        if host != "::1":
            raise
        log.info("not listening on [::1]:%d: %s", port, exc)  # no IPv6 here
        return None


async def run(settings: Settings) -> None:
    try:
        plane = ControlPlane(settings)
    except EngineError as exc:
        raise SystemExit(f"envd-controlplane: {exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await plane.start()
    await stopping.wait()
    log.info("shutting down (sandboxes keep running)")
    await plane.stop()
