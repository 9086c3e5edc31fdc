"""Assembly: store, backend, lifecycle, REST API and proxy in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from controlplane.api import Api
from controlplane.backend import DockerBackend, EngineError, find_engine_url
from controlplane.config import Settings
from controlplane.lifecycle import Manager
from controlplane.proxy import Proxy
from controlplane.records import Store

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
        await self._serve(Api(self.settings, self.manager).app(), self.settings.api_port)
        await self._serve(Proxy(self.manager).app(), self.settings.proxy_port)

    async def _check_templates(self) -> None:
        for template in self.settings.templates:
            if not await self.backend.image_present(template.image):
                log.warning(
                    "template %s: image %s is not present; build it (packaging/build-image.sh --tag %s) "
                    "or map the template to another image", template.id, template.image, template.image,
                )

    async def _serve(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=620)
        await runner.setup()
        await web.TCPSite(runner, self.settings.host, port, reuse_address=True).start()
        self._runners.append(runner)
        log.info("listening on %s:%d", self.settings.host, port)

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
