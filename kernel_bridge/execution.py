"""One `/execute` run: a job task owned by the context, and the lines it produces.

The HTTP handler only relays `Execution.lines`; the job itself lives in a task
that the handler does not own, so when the client disconnects (handler
cancelled) the job still interrupts the kernel, drains the interrupted request,
runs the env cleanup and only then releases the context lock
(docs/code-interpreter-api.md §4.10).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from kernel_bridge import languages, messages
from kernel_bridge.kernel import CLOSED, DEAD, GONE, Kernel, KernelRequest
from kernel_bridge.messages import Line
from kernel_bridge.spool import OutputSpool

log = logging.getLogger(__name__)

# finish this long after `idle` even if the shell reply never came (docs/code-interpreter-api.md §4.8)
REPLY_GRACE = 2.0
DRAIN_TIMEOUT = 10.0  # how long an interrupted request may take to wind down (docs/code-interpreter-api.md §4.10)
TRUNCATION_NOTICE = "\n[output truncated: this execution exceeded {limit} bytes of stdout/stderr]\n"


class ExecutionHost(Protocol):
    """What an execution needs from the context it runs in; `contexts.Context` provides it.

    Contexts create executions, so this module depends on this interface and
    not on contexts.py (no import back, not even for type checking), much as
    jupyter_client's kernel client never imports its kernel manager.
    """

    @property
    def id(self) -> str: ...

    @property
    def language(self) -> str: ...

    @property
    def lock(self) -> asyncio.Lock:
        """Held for a whole run: one execution per context at a time."""
        ...

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep the job task alive (the HTTP handler does not own it)."""
        ...

    async def kernel_for_execution(self) -> Kernel | None:
        """The kernel to run on, after any restart in progress; None if the context is gone."""
        ...

    async def await_cleanup(self) -> None:
        """Wait for the previous run's env clean-up."""
        ...

    def schedule_cleanup(self, kernel: Kernel, keys: list[str]) -> None:
        """Restore this run's env vars in the background."""
        ...

    def pending_global_env(self, kernel: Kernel) -> dict[str, str]:
        """Global env vars still to inject into `kernel`."""
        ...

    def mark_global_env_applied(self, kernel: Kernel) -> None: ...

    async def replace_kernel(self, old: Kernel | None, reason: str, now: bool | None = None) -> None:
        """Swap a kernel that cannot be stopped for a fresh one."""
        ...


OnLine = Callable[[Line], None]


class RequestOutcome:
    """How a kernel request ended: normally, with a kernel error, or by an event."""

    def __init__(self) -> None:
        self.error: Line | None = None  # first kernel error (IOPub or reply)
        self.event: str | None = None  # DEAD / CLOSED / GONE, if that ended it
        self.aborted = False


class Execution:
    """A single execution: state shared by the job and the HTTP relay."""

    def __init__(self, context: ExecutionHost, code: str, env_vars: dict[str, str], max_output_bytes: int) -> None:
        self.context = context
        self.code = code
        self.env_vars = env_vars
        self.lines = OutputSpool()
        self.client_gone = False
        self._gone_event = asyncio.Event()
        self._active: KernelRequest | None = None
        self._max_output = max_output_bytes
        self._output_bytes = 0
        self._truncated = False
        self._error_sent = False

    # ------------------------------------------------------------ relay side

    def start(self) -> None:
        self.context.track(asyncio.create_task(self._run(), name=f"execution:{self.context.id}"))

    def notify_client_gone(self) -> None:
        """Called by the handler on cancellation or write failure; the job winds down."""
        if self.client_gone:
            return
        self.client_gone = True
        self._gone_event.set()
        if self._active is not None:
            self._active.inbox.put((GONE, None))

    def _emit(self, line: Line) -> None:
        if not self.client_gone:
            self.lines.put(line)

    def _emit_error(self, line: Line) -> None:
        """Only the first error of an execution reaches the client (docs/code-interpreter-api.md §3.5)."""
        if not self._error_sent:
            self._error_sent = True
            self._emit(line)

    def _emit_stream(self, line: Line) -> None:
        """Bounded per-execution stdout/stderr volume keeps daemon memory bounded."""
        if self._truncated:
            return
        size = len(line["text"])
        if self._output_bytes + size > self._max_output:
            keep = max(0, self._max_output - self._output_bytes)
            self._truncated = True
            if keep:
                self._emit({**line, "text": line["text"][:keep]})
            notice = TRUNCATION_NOTICE.format(limit=self._max_output)
            self._emit({**line, "type": "stderr", "text": notice})
            return
        self._output_bytes += size
        self._emit(line)

    # ------------------------------------------------------------ job side

    async def _run(self) -> None:
        try:
            await self._run_locked()
        except Exception:
            log.exception("execution failed in context %s", self.context.id)
            self._emit_error(messages.server_error(messages.UNEXPECTED_END))
        finally:
            self._emit(messages.END_OF_EXECUTION)

    async def _run_locked(self) -> None:
        ctx = self.context
        if not await self._acquire(ctx.lock):
            return  # client left while queued: nothing was sent (docs/code-interpreter-api.md §4.10 step 1)
        kernel: Kernel | None = None
        try:
            kernel = await ctx.kernel_for_execution()
            if kernel is None:
                self._emit_error(messages.server_error(messages.UNEXPECTED_END))
                return
            await ctx.await_cleanup()
            if self.client_gone:
                return
            if not await self._setup(ctx, kernel):
                return
            await self._run_user_code(kernel)
        finally:
            if kernel is not None and self.env_vars:
                ctx.schedule_cleanup(kernel, list(self.env_vars))
            ctx.lock.release()

    async def _acquire(self, lock: asyncio.Lock) -> bool:
        """Wait for the context lock unless the client leaves first."""
        if not lock.locked() and not self.client_gone:
            await lock.acquire()  # free: taken at once, no tasks to race
            return True
        acquire = asyncio.ensure_future(lock.acquire())
        gone = asyncio.ensure_future(self._gone_event.wait())
        try:
            await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if acquire.done() and not acquire.cancelled():
            if self.client_gone:
                lock.release()
                return False
            return True
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            return False
        lock.release()  # acquired in the same tick as it was cancelled
        return False

    async def _setup(self, ctx: ExecutionHost, kernel: Kernel) -> bool:
        """Silent requests for global (first run after start) and per-execution env vars."""
        global_env = ctx.pending_global_env(kernel)
        if global_env:
            code = languages.env_set_code(ctx.language, global_env)
            if code and not await self._internal(kernel, code):
                return False
            ctx.mark_global_env_applied(kernel)
        if self.env_vars:
            code = languages.env_override_code(ctx.language, self.env_vars)
            if code and not await self._internal(kernel, code):
                return False
        return True

    async def _internal(self, kernel: Kernel, code: str) -> bool:
        """Run a silent setup request; its failure becomes this execution's error.

        docs/code-interpreter-api.md §4.5.2.
        """
        outcome = await self._send_and_wait(kernel, code, silent=True)
        if outcome is None:
            return False
        if outcome.event is not None:
            self._report_event(outcome.event)
            return False
        if outcome.error is not None:
            self._emit_error(outcome.error)
            return False
        return True

    async def _run_user_code(self, kernel: Kernel) -> None:
        outcome = await self._send_and_wait(kernel, self.code, silent=False)
        if outcome is None:
            return
        if outcome.event is not None:
            self._report_event(outcome.event)
        elif outcome.aborted and not self._error_sent:
            self._emit_error(messages.server_error(messages.EXECUTION_ABORTED))

    def _report_event(self, event: str) -> None:
        if event == DEAD:
            self._emit_error(messages.server_error(messages.CONTEXT_RESTARTING))
        elif event == CLOSED:
            self._emit_error(messages.server_error(messages.UNEXPECTED_END))

    async def _send_and_wait(self, kernel: Kernel, code: str, silent: bool) -> RequestOutcome | None:
        """Send one request and consume its messages until idle+reply (or an event)."""
        if self.client_gone:
            return None
        try:
            request = kernel.submit(code, silent=silent)
        except Exception:
            log.exception("sending execute_request failed")
            self._emit_error(messages.server_error(messages.SEND_FAILED))
            self._emit(messages.server_error(messages.UNEXPECTED_END))
            return None
        self._active = request
        try:
            if self.client_gone:  # raced with notify_client_gone before _active was set
                request.inbox.put((GONE, None))
            outcome = await consume(request, self._on_line if not silent else None)
            if outcome.event == GONE:
                await self._wind_down(kernel, request)
            return outcome
        finally:
            self._active = None
            kernel.forget(request)

    def _on_line(self, line: Line) -> None:
        kind = line["type"]
        if kind in ("stdout", "stderr"):
            self._emit_stream(line)
        elif kind == "error":
            self._emit_error(line)
        else:
            self._emit(line)

    async def _wind_down(self, kernel: Kernel, request: KernelRequest) -> None:
        """Client gone mid-request: interrupt, then drain until the kernel is done.

        docs/code-interpreter-api.md §4.10.

        A kernel that cannot be interrupted (Deno dies on SIGINT and ignores
        interrupt_request) is replaced at once instead: the JS/TS context keeps
        its id and cwd but loses its state, like after a restart.
        """
        if not kernel.interruptible:
            log.info("context %s: %s kernel cannot be interrupted; replacing it", self.context.id, kernel.language)
            await self.context.replace_kernel(kernel, reason=CLOSED, now=True)
            return
        try:
            await kernel.interrupt()
        except Exception:
            log.warning("interrupt failed for context %s", self.context.id, exc_info=True)
        try:
            outcome = await asyncio.wait_for(consume(request, None), timeout=DRAIN_TIMEOUT)
        except asyncio.TimeoutError:
            outcome = None
        if outcome is None:
            # The kernel ignored the interrupt: replace it rather than poison the next run.
            log.warning("context %s did not stop after interrupt; restarting", self.context.id)
            await self.context.replace_kernel(kernel, reason=CLOSED, now=True)


async def consume(request: KernelRequest, on_line: OnLine | None) -> RequestOutcome:
    """Read a request's messages until both `idle` and `execute_reply` arrived (docs/code-interpreter-api.md §4.8).

    `on_line` receives mapped lines (None for silent/draining requests). Events
    (kernel death, replacement, client gone) end the wait immediately.
    """
    outcome = RequestOutcome()
    idle = replied = False
    timeout: float | None
    while True:
        if idle and replied:
            if not request.settle:
                break
            timeout = request.settle  # late output (non-ipykernel kernels)
        else:
            timeout = REPLY_GRACE if idle else None
        if not await request.inbox.wait(timeout):
            break  # settled, or idle seen and the reply lost: finish anyway
        channel, msg = request.inbox.get()
        if channel == GONE and (idle or replied):
            continue  # the kernel already finished this request: never interrupt an idle kernel
        if channel in (DEAD, CLOSED, GONE):
            outcome.event = channel
            return outcome
        msg_type = msg["header"]["msg_type"]
        content = msg.get("content", {})
        if channel == "shell":
            if msg_type == "execute_reply":
                replied = True
                _on_reply(content, outcome, on_line)
            continue
        if msg_type == "status":
            idle = idle or content.get("execution_state") == "idle"
            continue
        if msg_type == "error" and outcome.error is None:
            outcome.error = messages.kernel_error(content)
        if on_line is not None:
            line = messages.map_iopub(msg)
            if line is not None:
                on_line(line)
    return outcome


def _on_reply(content: dict[str, Any], outcome: RequestOutcome, on_line: OnLine | None) -> None:
    status = content.get("status")
    if status == "error" and outcome.error is None:
        outcome.error = messages.kernel_error(content)
        if on_line is not None:
            on_line(outcome.error)
    elif status == "aborted":
        outcome.aborted = True
