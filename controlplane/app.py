"""Assembly: store, backend, lifecycle, REST API and proxy in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

from aiohttp import web

from controlplane.api import Api
from controlplane.backend import DockerBackend, EngineError, find_engine_url
from controlplane.config import Settings
from controlplane.lifecycle import Manager
from controlplane.proxy import Proxy
from controlplane.records import Store
from controlplane.tls import ensure_certificates

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = DockerBackend(find_engine_url(settings.engine_url), settings.state_dir, settings.instance_id)
        self.store = Store(settings.state_dir)
        self.manager = Manager(settings, self.store, self.backend)
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        await self._check_templates()
        await self.manager.start()
        api, proxy = Api(self.settings, self.manager), Proxy(self.manager)
        await self._serve(api.app(), self.settings.api_port)
        await self._serve(proxy.app(), self.settings.proxy_port)
        if self.settings.tls_port:
            certificates = ensure_certificates(os.path.join(self.settings.state_dir, "tls"), self.settings.domain)
            await self._serve(api.app(host_routed_to=proxy), self.settings.tls_port, certificates.server_context())
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

    async def _serve(self, app: web.Application, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on every configured address (loopback over IPv4 and IPv6 by default)."""
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=620)
        await runner.setup()
        self._runners.append(runner)
        for host in self.settings.hosts:
            site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
            try:
                await site.start()
            except OSError as exc:
                if host != "::1":
                    raise
                log.info("not listening on [::1]:%d: %s", port, exc)  # no IPv6 here
                continue
            log.info("listening on %s", site.name)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        await self.manager.stop()
        self.store.close()
        self.backend.close()


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
