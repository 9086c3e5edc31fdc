"""One kernel process: launch, message routing by parent msg_id, interrupt, shutdown.

A `Kernel` is disposable: restarting a context means swapping in a fresh
`Kernel` (often a pre-started spare) and shutting the old one down. That keeps
"which kernel did this request go to" unambiguous, so a late message or a
stray interrupt can never hit the wrong execution
(docs/code-interpreter-api.md §4.10, docs/differences.md §6.2 item 4).

jupyter_client's asyncio sockets are used for the launch handshake only; after
that the shell and IOPub sockets are read from event-loop reader callbacks on
plain (shadow) sockets, and requests are sent on them directly. pyzmq's
asyncio layer creates a future per receive and polls around every message,
which was a fifth of the daemon's CPU per execution.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field
from typing import IO, Any, cast

import zmq
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from kernel_bridge.inbox import Inbox

log = logging.getLogger(__name__)

KERNEL_SIDE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_side")
READY_TIMEOUT = 60.0
# Kernels may publish output after `idle`: Deno 2.9 sends execute_result after
# it in ~7% of runs, at most ~1 ms later (400 runs measured); keep listening
# this long. This wait is added to every run of such a kernel.
LATE_OUTPUT_GRACE = 0.025
# Known to publish everything before `idle`: ipykernel and bash_kernel (by
# language), and envd's Node.js kernel (packaging/js-kernel, by program), which
# flushes its coalesced streams before any other message. R and Java (not
# measured) keep the grace.
_ORDERED_LANGUAGES = ("python", "bash")
_ORDERED_PROGRAMS = ("node", "nodejs")
# Messages read per reader callback before yielding to the loop (output floods).
DRAIN_BATCH = 64
#: Bytes one drain takes before it lets the execution consume them.
DRAIN_BATCH_BYTES = 1024 * 1024
#: Kernel messages ZMQ may queue in the daemon ahead of it: a kernel that
#: prints faster than the daemon reads then waits (its IOPub is NODROP,
#: kernel_side/startup.py) instead of growing the daemon's memory.
IOPUB_QUEUE_MESSAGES = 4
# Plain ints: `getsockopt(zmq.EVENTS)` builds an enum on every call.
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
# Kernel programs that cannot be interrupted: Deno exits on SIGINT and ignores
# interrupt_request, so an interrupted run means a replaced kernel (state lost).
_UNINTERRUPTIBLE_PROGRAMS = ("deno",)

# Items a KernelRequest inbox carries besides ("iopub"|"shell", msg).
DEAD = "dead"  # the kernel process died
CLOSED = "closed"  # the kernel is being shut down / replaced (restart, delete, stop)
GONE = "gone"  # the HTTP client went away (pushed by the execution)


@dataclass
class KernelRequest:
    """An execute_request in flight; its kernel feeds the replies into `inbox`."""

    msg_id: str
    silent: bool
    settle: float = 0.0
    inbox: Inbox = field(default_factory=Inbox)


class KernelStartError(Exception):
    """The kernel could not be launched or never became ready."""


class Kernel:
    """A launched kernel and the routing of its shell and IOPub replies."""

    def __init__(
        self,
        spec_name: str,
        language: str,
        env: dict[str, str],
        launch_cwd: str,
        output: IO[bytes] | None = None,
        live: set | None = None,
    ) -> None:
        self.spec_name = spec_name
        self.language = language
        self.kernel_id = str(uuid.uuid4())
        self._env = _kernel_env(language, env)
        self.settle_delay = 0.0 if language in _ORDERED_LANGUAGES else LATE_OUTPUT_GRACE  # see start()
        self._launch_cwd = launch_cwd
        self._output = output  # where the kernel process's own stdout/stderr go
        self._live = live if live is not None else set()  # owner's set of launched kernels
        self.km: AsyncKernelManager | None = None
        self.kc: Any = None
        self._requests: dict[str, KernelRequest] = {}
        self._shell: zmq.Socket[bytes] | None = None  # plain sockets once the kernel is ready
        self._reader_fds: list[int] = []
        self.closed = False
        self.failed_reason: str | None = None  # DEAD/CLOSED once the kernel is unusable
        self.interruptible = True  # False: stopping a run means replacing the kernel

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> Kernel:
        """Launch the process and wait until it answers kernel_info (IOPub subscribed)."""
        self._live.add(self)  # before launching, so a cancelled start can still be killed
        try:
            self.km = AsyncKernelManager(kernel_name=self.spec_name)
            self.km.kernel_id = self.kernel_id
            argv = self.km.kernel_spec.argv if self.km.kernel_spec else []
            program = os.path.basename(argv[0]) if argv else ""
            self.interruptible = program not in _UNINTERRUPTIBLE_PROGRAMS
            if program in _ORDERED_PROGRAMS:
                self.settle_delay = 0.0
            await self.km.start_kernel(
                env=self._env,
                cwd=self._launch_cwd,
                extra_arguments=self._extra_arguments(),
                stdout=self._output,
                stderr=self._output,
            )
            self.kc = self.km.client()
            # Set before the sockets connect: a connected pipe keeps its first limit.
            self.kc.context.setsockopt(zmq.RCVHWM, IOPUB_QUEUE_MESSAGES)
            # No heartbeat thread per kernel: the context's watchdog polls the process.
            self.kc.start_channels(hb=False)
            await self.kc.wait_for_ready(timeout=READY_TIMEOUT)
        except Exception as exc:
            await self.shutdown(now=True)
            raise KernelStartError(f"{type(exc).__name__}: {exc}") from exc
        self._read(self.kc.iopub_channel.socket, "iopub")
        self._shell = self._read(self.kc.shell_channel.socket, "shell")
        return self

    def _extra_arguments(self) -> list[str]:
        """ipykernel gets our profile config (colors, formatters, startup code)."""
        if self.spec_name.startswith("python"):
            return [f"--config={os.path.join(KERNEL_SIDE_DIR, 'ipython_kernel_config.py')}"]
        return []

    async def is_alive(self) -> bool:
        if self.km is None or self.closed:
            return False
        try:
            return bool(await self.km.is_alive())
        except Exception:
            return False

    async def shutdown(self, now: bool = False) -> None:
        """Fail every pending request, stop routers, shut the process down (then kill)."""
        self.closed = True
        self.fail_all(CLOSED)
        self.close_channels()
        if self.km is not None and self.km.has_kernel:
            try:
                await asyncio.wait_for(self.km.shutdown_kernel(now=now), timeout=8)
            except Exception as exc:
                log.warning("kernel %s shutdown failed (%r), killing", self.kernel_id, exc)
                self.kill()
        self._live.discard(self)

    def close_channels(self) -> None:
        """Close the client's sockets (a client left running warns when collected)."""
        self.closed = True
        loop = asyncio.get_running_loop()
        for fd in self._reader_fds:
            loop.remove_reader(fd)
        self._reader_fds.clear()
        if self.kc is not None and self.kc.channels_running:
            try:
                self.kc.stop_channels()
            except Exception:
                log.debug("stop_channels failed", exc_info=True)

    def kill(self) -> None:
        """Last resort, also used when the daemon stops: SIGKILL the kernel's process group.

        jupyter_client starts every kernel in its own session, so its group also
        holds whatever the user's code spawned; never signal our own group.
        """
        pid = self.pid
        if pid is None:
            return
        try:
            group = os.getpgid(pid)
            if group != os.getpgid(0):
                os.killpg(group, signal.SIGKILL)
                return
        except (ProcessLookupError, PermissionError, OSError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    @property
    def pid(self) -> int | None:
        try:
            return self.km.provisioner.process.pid  # type: ignore[union-attr]
        except AttributeError:
            return None

    # ------------------------------------------------------------ requests

    def submit(self, code: str, silent: bool) -> KernelRequest:
        """Send an execute_request; internal requests are silent and leave no history.

        docs/code-interpreter-api.md §4.6.
        """
        if self._shell is None:
            raise RuntimeError("kernel not started")
        content = {
            "code": code,
            "silent": silent,
            "store_history": not silent,
            "user_expressions": {},
            "allow_stdin": False,
            # Never: requests are serialised per context, so there is no queue to stop, and
            # ipykernel would abort whatever arrives before its abort window closes (the
            # next run_code after an error came back "ExecutionAborted" now and then).
            "stop_on_error": False,
        }
        msg = self.kc.session.send(self._shell, "execute_request", content)
        # A send may consume the socket's edge-triggered readiness: look again soon.
        asyncio.get_running_loop().call_soon(self._drain, self._shell, "shell")
        msg_id = msg["header"]["msg_id"]
        request = KernelRequest(msg_id=msg_id, silent=silent, settle=self.settle_delay)
        self._requests[msg_id] = request
        if self.failed_reason is not None:  # raced with death/replacement: end at once
            request.inbox.put((self.failed_reason, None))
        return request

    def forget(self, request: KernelRequest) -> None:
        self._requests.pop(request.msg_id, None)

    def fail_all(self, reason: str) -> None:
        """Tell every pending request that the kernel is gone (death or replacement)."""
        if self.failed_reason is None:
            self.failed_reason = reason
        for request in list(self._requests.values()):
            request.inbox.put((reason, None))

    async def interrupt(self) -> None:
        """SIGINT or interrupt_request, per the kernel spec's interrupt_mode."""
        if self.km is not None and not self.closed:
            await self.km.interrupt_kernel()

    # ------------------------------------------------------------ routing

    def _read(self, channel_socket: Any, channel: str) -> zmq.Socket[bytes]:
        """Take the socket's fd over from pyzmq's asyncio layer; returns a plain socket on it."""
        socket: zmq.Socket[bytes] = zmq.Socket.shadow(channel_socket.underlying)
        fd = socket.fileno()  # ZMQ_FD
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        loop.add_reader(fd, self._drain, socket, channel)
        self._reader_fds.append(fd)
        loop.call_soon(self._drain, socket, channel)  # whatever is queued already
        return socket

    def _drain(self, socket: zmq.Socket[bytes], channel: str) -> None:
        """Dispatch what the socket holds, by parent msg_id; unknown parents are dropped.

        docs/code-interpreter-api.md §4.8.

        The fd is edge-triggered: it signals again only once ZMQ_EVENTS has
        reported the socket empty, so a batch cut short reschedules itself.
        (Asking ZMQ_EVENTS is cheaper than reading until EAGAIN raises.)
        """
        if self.closed:
            return
        taken = 0
        for _ in range(DRAIN_BATCH):
            try:
                # pyzmq types every option's value as `int | bytes`; ZMQ_EVENTS is an int.
                if not socket.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
                    return
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                log.debug("%s receive failed", channel, exc_info=True)
                return
            taken += sum(len(frame) for frame in frames)
            self._dispatch(channel, frames)
            if taken >= DRAIN_BATCH_BYTES:
                break
        asyncio.get_running_loop().call_soon(self._drain, socket, channel)

    def _dispatch(self, channel: str, frames: list[bytes]) -> None:
        try:
            msg = receive_message(self.kc.session, frames)
        except Exception:
            log.debug("undecodable %s message dropped", channel, exc_info=True)
            return
        parent = msg["parent_header"].get("msg_id")
        request = self._requests.get(parent) if parent else None
        if request is not None:
            request.inbox.put((channel, msg))


def receive_message(session: Session, frames: list[bytes]) -> dict[str, Any]:
    """A signed kernel message, decoded like `Session.deserialize` minus its costly extras.

    jupyter_client's `get_msg` polls before every receive, parses every header
    date into a datetime and adapts old protocol versions; none of that is
    needed here, and it was a fifth of the daemon's CPU per execution.
    """
    # feed_identities is typed for Frame lists too; given bytes (copy=True) it returns bytes.
    parts = cast("list[bytes]", session.feed_identities(frames)[1])
    if session.auth is not None and not hmac.compare_digest(parts[0], session.sign(parts[1:5])):
        raise ValueError("invalid message signature")
    header, parent, metadata, content = (session.unpack(part) for part in parts[1:5])
    return {
        "header": header,
        "msg_id": header.get("msg_id"),
        "msg_type": header.get("msg_type"),
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
        "buffers": parts[5:],
    }


def _kernel_env(language: str, env: dict[str, str]) -> dict[str, str]:
    """Per-language tweaks: JS kernels (Deno) colour `text/plain` unless NO_COLOR is set."""
    if language in ("javascript", "typescript", "deno"):
        return {**env, "NO_COLOR": "1"}
    return env
