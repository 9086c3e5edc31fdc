"""The `process.Process` RPC handlers (docs/envd-api.md §5): requests in, events and errors out.

Handlers translate between messages and `ManagedProcess`/`Registry`; the
process machinery itself knows nothing about RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message

from envd.config import Config
from envd.connect import Code, ConnectError, Kind, Rpc, RpcContext
from envd.process.errors import NoSelector, OutputLost, ProcessNotFound
from envd.process.managed import CloseStdinError, InputError, ManagedProcess
from envd.process.output import Subscription
from envd.process.registry import Registry
from envd.process.spawn import Spawned, SpawnError, build_env, resolve_cwd, spawn_pipes, spawn_pty
from envd.proto import process_pb2 as pb
from envd.users import User

log = logging.getLogger(__name__)

SERVICE = "process.Process"
#: How long shutdown waits for killed children to be reaped and their streams to end.
CLOSE_SECONDS = 2.0

_SIGNALS = {pb.SIGNAL_SIGKILL: signal.SIGKILL, pb.SIGNAL_SIGTERM: signal.SIGTERM}


#: The process machinery's failures as the SDKs expect them.
ERRORS: dict[type[Exception], Code] = {
    ProcessNotFound: Code.NOT_FOUND,
    NoSelector: Code.UNIMPLEMENTED,
    OutputLost: Code.DATA_LOSS,
}


class ProcessService:
    """Starts, tracks, feeds, signals and streams the sandbox's processes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry()

    def rpcs(self) -> list[Rpc]:
        def rpc(
            method: str,
            kind: Kind,
            req: type[Message],
            handler: Callable[..., Any],
            keepalive: Callable[[], Message] | None = None,
        ) -> Rpc:
            return Rpc(SERVICE, method, kind, req, handler, keepalive, ERRORS)

        return [
            rpc("Start", Kind.SERVER_STREAM, pb.StartRequest, self.start, lambda: pb.StartResponse(event=_keepalive())),
            rpc(
                "Connect",
                Kind.SERVER_STREAM,
                pb.ConnectRequest,
                self.connect,
                lambda: pb.ConnectResponse(event=_keepalive()),
            ),
            rpc("List", Kind.UNARY, pb.ListRequest, self.list),
            rpc("SendInput", Kind.UNARY, pb.SendInputRequest, self.send_input),
            rpc("StreamInput", Kind.CLIENT_STREAM, pb.StreamInputRequest, self.stream_input),
            rpc("CloseStdin", Kind.UNARY, pb.CloseStdinRequest, self.close_stdin),
            rpc("SendSignal", Kind.UNARY, pb.SendSignalRequest, self.send_signal),
            rpc("Update", Kind.UNARY, pb.UpdateRequest, self.update),
        ]

    async def close(self) -> None:
        """Daemon shutdown: kill every process group, let every stream end with its end event."""
        processes = self.registry.live()
        for process in processes:
            try:
                process.signal_group(signal.SIGKILL)
            except OSError as exc:
                log.warning("process %d: kill at shutdown failed: %s", process.pid, exc)
        if processes:
            waits = asyncio.gather(*(p.wait_closed() for p in processes), return_exceptions=True)
            try:
                await asyncio.wait_for(waits, CLOSE_SECONDS)
            except asyncio.TimeoutError:
                log.warning("some processes did not end within %.0fs of shutdown", CLOSE_SECONDS)

    # --- streams -------------------------------------------------------------

    async def start(self, request: pb.StartRequest, ctx: RpcContext) -> AsyncIterator[pb.StartResponse]:
        """Spawn, then stream start → data… → end (docs/envd-api.md §5.4, §5.6)."""
        process, sub = await self._launch(request, ctx)
        try:
            yield pb.StartResponse(event=_start(process.pid))
            async for event in sub:
                yield pb.StartResponse(event=event)
        finally:
            sub.close()

    async def connect(self, request: pb.ConnectRequest, ctx: RpcContext) -> AsyncIterator[pb.ConnectResponse]:
        """Re-attach to a live process, or report a recently ended one (docs/envd-api.md §5.7)."""
        try:
            process = self.registry.find(request.process)
        except ProcessNotFound:
            retained = self.registry.find_retained(request.process)
            if retained is None:
                raise
            yield pb.ConnectResponse(event=_start(retained.pid))
            yield pb.ConnectResponse(event=retained.end)
            return
        sub = process.output.subscribe()  # an already ended process yields just its end
        try:
            yield pb.ConnectResponse(event=_start(process.pid))
            async for event in sub:
                yield pb.ConnectResponse(event=event)
        finally:
            sub.close()

    async def _launch(self, request: pb.StartRequest, ctx: RpcContext) -> tuple[ManagedProcess, Subscription]:
        """Everything up to a running, registered, subscribed process (docs/envd-api.md §5.4 steps 1-9)."""
        user = ctx.user()
        config = request.process
        requested_cwd = config.cwd if config.HasField("cwd") else ""
        try:
            cwd = resolve_cwd(requested_cwd, user, self.config.default_workdir)
        except SpawnError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from None
        env = build_env(user, self.config.global_envs(), dict(config.envs))
        argv = [config.cmd, *config.args]
        spawned = await _spawn(request, argv, env, cwd, user)
        stored = pb.ProcessConfig()
        stored.CopyFrom(config)
        tag = request.tag if request.HasField("tag") else None
        process = ManagedProcess(spawned, stored, tag, on_end=self.registry.retire)
        self.registry.add(process)
        return process, process.start(ctx.timeout)

    # --- unary ---------------------------------------------------------------

    async def list(self, request: pb.ListRequest, ctx: RpcContext) -> pb.ListResponse:
        return pb.ListResponse(
            processes=[pb.ProcessInfo(config=p.config, pid=p.pid, tag=p.tag) for p in self.registry.live()]
        )

    async def send_input(self, request: pb.SendInputRequest, ctx: RpcContext) -> pb.SendInputResponse:
        process = self.registry.find(request.process)
        await _deliver(process, request.input)
        return pb.SendInputResponse()

    async def stream_input(
        self, requests: AsyncIterator[pb.StreamInputRequest], ctx: RpcContext
    ) -> pb.StreamInputResponse:
        """Apply each message as it arrives: `start` selects, `data` writes (docs/envd-api.md §5.9)."""
        process: ManagedProcess | None = None
        stream = aiter(requests)
        while True:
            try:
                message = await anext(stream)
            except StopAsyncIteration:
                return pb.StreamInputResponse()
            except (ConnectError, ConnectionError):
                raise
            except Exception as exc:  # the body broke off mid-envelope, a payload error…
                raise ConnectError(Code.UNKNOWN, f"error streaming input: {exc}") from exc
            kind = message.WhichOneof("event")
            if kind == "start":
                process = self.registry.find(message.start.process)
            elif kind == "data":
                if process is None:
                    raise ConnectError(Code.FAILED_PRECONDITION, "no process selected: send a start event first")
                await _deliver(process, message.data.input)
            elif kind is None:
                raise ConnectError(Code.UNIMPLEMENTED, "invalid event type <nil>")

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RpcContext) -> pb.CloseStdinResponse:
        process = self.registry.find(request.process)
        try:
            await process.close_stdin()
        except CloseStdinError as exc:
            raise ConnectError(Code.UNKNOWN, str(exc)) from None
        return pb.CloseStdinResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RpcContext) -> pb.SendSignalResponse:
        """Signal the process group; after SIGKILL answer once the pid is reaped (docs/envd-api.md §5.10)."""
        process = self.registry.find(request.process)
        signum = _SIGNALS.get(request.signal)
        if signum is None:
            raise ConnectError(Code.UNIMPLEMENTED, f"invalid signal: {_signal_name(request.signal)}")
        try:
            process.signal_group(signum)
        except OSError as exc:
            raise ConnectError(Code.INTERNAL, f"error sending signal: {exc}") from None
        if signum == signal.SIGKILL:
            await process.wait_reaped()
        return pb.SendSignalResponse()

    async def update(self, request: pb.UpdateRequest, ctx: RpcContext) -> pb.UpdateResponse:
        process = self.registry.find(request.process)
        if request.HasField("pty"):
            try:
                process.resize(request.pty.size.cols, request.pty.size.rows)
            except InputError as exc:
                raise ConnectError(Code.INTERNAL, str(exc)) from None
        return pb.UpdateResponse()


async def _spawn(request: pb.StartRequest, argv: list[str], env: dict[str, str], cwd: str, user: User) -> Spawned:
    """PTY or pipes; a failure names the command and the reason (docs/envd-api.md §5.4 step 7)."""
    try:
        if request.HasField("pty"):
            size = request.pty.size
            return await spawn_pty(argv, env, cwd, user, size.cols, size.rows)
        with_stdin = request.stdin if request.HasField("stdin") else True
        return await spawn_pipes(argv, env, cwd, user, with_stdin)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ConnectError(
            Code.INVALID_ARGUMENT, f"error starting process '{' '.join(argv)}': {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


async def _deliver(process: ManagedProcess, data: pb.ProcessInput) -> None:
    """Route input to stdin or the PTY, with upstream's error texts (docs/envd-api.md §5.9)."""
    kind = data.WhichOneof("input")
    try:
        if kind == "stdin":
            await process.write_stdin(data.stdin)
        elif kind == "pty":
            await process.write_pty(data.pty)
        else:
            raise ConnectError(Code.UNIMPLEMENTED, "invalid input type <nil>")
    except InputError as exc:
        raise ConnectError(Code.INTERNAL, str(exc)) from None


def _signal_name(value: int) -> str:
    """The enum name, or the bare number for a value the enum does not define (as Go prints it)."""
    try:
        return pb.Signal.Name(value)
    except ValueError:
        return str(value)


def _start(pid: int) -> pb.ProcessEvent:
    return pb.ProcessEvent(start=pb.ProcessEvent.StartEvent(pid=pid))


def _keepalive() -> pb.ProcessEvent:
    return pb.ProcessEvent(keepalive=pb.ProcessEvent.KeepAlive())
