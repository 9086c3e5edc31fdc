"""Assembly: build the aiohttp applications, start them, stop them cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from envd import middleware as mw
from envd.config import Config
from envd.connect import ConnectServer, Rpc
from envd.filesystem import FilesystemService
from envd.http.compose import ComposeRoutes
from envd.http.connections import ConnectionGuard
from envd.http.errors import transfer_errors
from envd.http.files import FileRoutes
from envd.http.forward import PortForwarder
from envd.http.system import SystemRoutes, health
from envd.permissions import acting_user
from envd.process import ProcessService
from envd.reaper import Reaper, become_subreaper
from envd.users import UserError

if TYPE_CHECKING:
    from kernel_bridge import CodeInterpreter

log = logging.getLogger(__name__)

#: Uploads and stdin are streamed; only unary bodies are read whole.
MAX_BODY_BYTES = 1024**3
KEEPALIVE_SECONDS = 640
SHUTDOWN_SECONDS = 3.0


class Service(Protocol):
    """A Connect service: its RPCs, and what to do when the daemon stops."""

    def rpcs(self) -> list[Rpc]: ...

    async def close(self) -> None: ...


class Daemon:
    """Everything one daemon process serves, on one port or two."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.connect = ConnectServer(default_user=lambda: config.default_user)
        self.services: list[Service] = [FilesystemService(config), ProcessService(config)]
        for service in self.services:
            self.connect.add(service.rpcs())
        self.code_interpreter = _build_code_interpreter(config)
        self.reaper = Reaper()
        self.forwarder = PortForwarder()
        self.guard = ConnectionGuard(config.head_timeout, config.max_idle_connections)
        self._runners: list[web.AppRunner] = []

    def envd_app(self) -> web.Application:
        """The envd port; with --code-port equal to --port, the code interpreter's too."""
        shared = self.config.single_port and self.code_interpreter is not None
        return self._app(mw.api_selector(shared), with_code=shared)

    def socket_app(self) -> web.Application:
        """The Unix-socket ingress: both APIs, and every other port forwarded inside."""
        selector = mw.port_header_selector(self.code_interpreter is not None)
        return self._app(
            selector, with_code=self.code_interpreter is not None, forward=mw.forward_other_ports(self.forwarder)
        )

    def _app(self, selector: mw.Middleware, with_code: bool, forward: mw.Middleware | None = None) -> web.Application:
        config = self.config
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[
                self.guard.middleware,
                mw.access_log,
                selector,
                *([forward] if forward else []),
                mw.only_for(mw.ENVD, mw.plain_not_found),
                mw.only_for(mw.ENVD, mw.cors),
                mw.only_for(mw.ENVD, mw.access_token_gate(config)),
                mw.only_for(mw.ENVD, mw.basic_user_check(self.connect.is_rpc_path)),
                mw.only_for(mw.ENVD, transfer_errors),
            ],
        )
        app.on_response_prepare.append(mw.add_cors_to_streams)
        app.add_routes(
            SystemRoutes(config).routes()
            + FileRoutes(config).routes()
            + ComposeRoutes(config).routes()
            + self.connect.routes()
        )
        if with_code:
            assert self.code_interpreter is not None
            for middleware in self._code_middlewares():
                app.middlewares.append(mw.only_for(mw.CODE, middleware))
            code_routes = app.add_routes(self.code_interpreter.routes())
            app.add_routes([web.get("/health", self._shared_health, allow_head=False)])
            app.middlewares.append(mw.routes_of_api(mw.CODE, {route.resource for route in code_routes}))
        else:
            app.add_routes([web.get("/health", health, allow_head=False)])
        return app

    def code_app(self) -> web.Application:
        assert self.code_interpreter is not None
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[self.guard.middleware, mw.access_log, *self._code_middlewares()],
        )
        app.add_routes(self.code_interpreter.routes())
        app.add_routes([web.get("/health", self.code_interpreter.health, allow_head=False)])
        return app

    def _code_middlewares(self) -> list[mw.Middleware]:
        assert self.code_interpreter is not None
        return [*self.code_interpreter.middlewares(), mw.execute_token_gate(self.config)]

    async def _shared_health(self, request: web.Request) -> web.StreamResponse:
        if request.get(mw.API_KEY) == mw.CODE and self.code_interpreter is not None:
            return await self.code_interpreter.health(request)
        return await health(request)

    async def start(self) -> None:
        """Listen first; kernels start afterwards (requests that need one wait for it)."""
        _check_default_user(self.config)
        become_subreaper()
        self.reaper.start()
        host, port = self.config.host, self.config.port
        await self._serve(self.envd_app(), lambda r: web.TCPSite(r, host, port, reuse_address=True))
        if self.code_interpreter is not None and not self.config.single_port:
            code_port = self.config.code_port
            await self._serve(self.code_app(), lambda r: web.TCPSite(r, host, code_port, reuse_address=True))
        if self.config.unix_socket:
            await self._serve(self.socket_app(), lambda r: web.UnixSite(r, self.config.unix_socket))
            _hand_socket_to_directory_owner(self.config.unix_socket)
        if self.code_interpreter is not None:
            self.code_interpreter.start()

    async def _serve(self, app: web.Application, site: Callable[[web.AppRunner], web.BaseSite]) -> None:
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            keepalive_timeout=KEEPALIVE_SECONDS,
            access_log=None,
            shutdown_timeout=SHUTDOWN_SECONDS,
            # Bodies are decoded where they are read, so a truncated gzip
            # upload is an error rather than a silently short file.
            auto_decompress=False,
        )
        await runner.setup()
        assert runner.server is not None
        self.guard.watch(runner.server)
        listening = site(runner)
        await listening.start()
        self._runners.append(runner)
        log.info("listening on %s", listening.name)

    async def stop(self) -> None:
        """Stop accepting, end every stream and child, then close connections."""
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        closers = [service.close() for service in self.services] + [self.forwarder.close()]
        if self.code_interpreter is not None:
            closers.append(self.code_interpreter.stop())
        results = await asyncio.gather(*closers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("error while stopping: %r", result)
        await self.guard.close()
        for runner in self._runners:
            await runner.cleanup()
        await self.reaper.stop()
        if self.config.unix_socket:
            _remove_socket(self.config.unix_socket)


def _hand_socket_to_directory_owner(path: str) -> None:
    """Mode 0600, owned by whoever owns its directory: the control plane, which
    need not be root (Docker group, rootless Podman), can connect; nobody else."""
    directory = os.stat(os.path.dirname(os.path.abspath(path)))
    os.chmod(path, 0o600)
    os.chown(path, directory.st_uid, directory.st_gid)


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _build_code_interpreter(config: Config) -> CodeInterpreter | None:
    """Imported only when enabled: jupyter_client would cost an envd-only daemon RSS."""
    if not config.code_interpreter:
        return None
    from kernel_bridge import CodeInterpreter

    return CodeInterpreter(default_cwd=_code_default_cwd(config), global_envs=config.global_envs)


def _code_default_cwd(config: Config) -> str:
    """`/home/user` as upstream; the default user's home where that does not exist."""
    if os.path.isdir("/home/user"):
        return "/home/user"
    try:
        return acting_user(None, config.default_user).home
    except UserError:
        return os.getcwd()


def _check_default_user(config: Config) -> None:
    try:
        acting_user(None, config.default_user)
    except UserError as exc:
        log.warning("%s: requests that name no user will fail", exc)


async def run(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    daemon = Daemon(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await daemon.start()
    await stopping.wait()
    log.info("shutting down")
    await daemon.stop()
