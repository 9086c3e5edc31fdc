"""Context registry, kernel lifecycle and spare kernels.

A context is a stable id + language + cwd in front of a replaceable `Kernel`.
Explicit restarts, automatic restarts after a crash and "the kernel ignored the
interrupt" all go through `Context.replace_kernel`, which fails the requests of
the old kernel, attaches a fresh one (from the spare pool when possible) and
re-applies cwd; global env vars are re-injected lazily at the next execution
(docs/code-interpreter-api.md §4.11). This fixes two upstream bugs,
docs/differences.md §6.2 items 1 and 2.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel

from kernel_bridge import languages
from kernel_bridge.errors import ContextError
from kernel_bridge.execution import Execution, consume
from kernel_bridge.kernel import CLOSED, DEAD, Kernel, KernelStartError
from kernel_bridge.runtime import RuntimeDir, kernel_environment
from kernel_bridge.watchdog import Watchdog

log = logging.getLogger(__name__)

CWD_TIMEOUT = 30.0
CLEANUP_TIMEOUT = 30.0
# Languages that keep a pre-started kernel ready (see `Registry._refill_spare`).
SPARE_LANGUAGES = (languages.PYTHON,)


class Context:
    """One kernel-backed execution context (docs/code-interpreter-api.md §4.1).

    It is the `ExecutionHost` of its executions and the `Watched` of its watchdog.
    """

    def __init__(self, registry: Registry, language: str, cwd: str, lazy: bool = False) -> None:
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = asyncio.Lock()
        self.kernel: Kernel | None = None
        self.deleted = False
        self.dead = False
        # No kernel until first used (the default JavaScript context): see `ensure_started`.
        self.lazy = lazy
        self._first_start: asyncio.Task[Context] | None = None
        self._registry = registry
        self._ready = asyncio.Event()
        self._replace_lock = asyncio.Lock()
        self._globals_applied_for: Kernel | None = None
        self._cleanup: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._watchdog = Watchdog(self)

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def execute(self, code: str, env_vars: dict[str, str], max_output_bytes: int) -> Execution:
        """Start running `code` here; the returned execution streams its lines."""
        execution = Execution(self, code, env_vars, max_output_bytes)
        execution.start()
        return execution

    def track(self, task: asyncio.Task) -> None:
        """Keep a strong reference to tasks owned by this context (executions, cleanups)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ kernel attach/replace

    async def ensure_started(self) -> None:
        """Start a lazy context's kernel on its first use; ContextError if it cannot start.

        The start is a task of its own: concurrent first uses share it, and a
        client that leaves mid-start does not stop it. After a failure the
        context stays lazy and the next use tries again (and reports again).
        """
        if not self.lazy or self.deleted:
            return
        task = self._first_start
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._first_start = self._registry.spawn(self._start_first())
        await asyncio.shield(task)

    async def _start_first(self) -> Context:
        kernel = await self._registry.obtain_kernel(self.language)
        if self.deleted:  # deleted while the kernel was starting
            await kernel.shutdown(now=True)
            return self
        await self.attach(kernel)
        self.lazy = False
        if self.deleted:  # deleted while the cwd was being applied
            self.kernel = None
            await kernel.shutdown(now=True)
        return self

    async def attach(self, kernel: Kernel, creating: bool = True) -> None:
        """Apply cwd to a fresh kernel and make it current.

        At creation a cwd failure fails the creation
        (docs/code-interpreter-api.md §4.4) and the kernel is shut down. On a
        restart/replacement (`creating=False`) it is only a
        warning: the kernel stays, running in the default cwd, so a directory
        removed since creation does not leave the context without a kernel.
        """
        try:
            await self._apply_cwd(kernel)
        except ContextError as exc:
            if creating:
                await kernel.shutdown(now=True)
                raise
            log.warning("context %s: %s %s after restart; using the default cwd", self.id, exc, self.cwd)
        except BaseException:
            await kernel.shutdown(now=True)
            raise
        self.kernel = kernel
        self._ready.set()
        self._watchdog.kernel_attached()

    async def _apply_cwd(self, kernel: Kernel) -> None:
        code = languages.cwd_code(self.language, self.cwd)
        if code is None:
            return
        request = kernel.submit(code, silent=True)
        try:
            outcome = await asyncio.wait_for(consume(request, None), timeout=CWD_TIMEOUT)
        except asyncio.TimeoutError:
            outcome = None
        finally:
            kernel.forget(request)
        if outcome is None or outcome.event is not None or outcome.error is not None:
            raise ContextError("Failed to set working directory")

    async def replace_kernel(self, old: Kernel | None, reason: str, now: bool | None = None) -> None:
        """Swap `old` for a fresh kernel (no-op if it was already replaced).

        `now`: kill the old kernel instead of asking it to shut down (default: only
        when it died). A context deleted while the replacement was starting shuts
        the new kernel down too, so it cannot outlive the context.
        """
        if now is None:
            now = reason == DEAD
        async with self._replace_lock:
            if self.deleted or self.kernel is not old:
                return
            self._ready.clear()
            if old is not None:
                old.fail_all(reason)
            self._cancel_cleanup()
            try:
                new = await self._registry.obtain_kernel(self.language)
                if self.deleted:  # deleted while the kernel was starting
                    await new.shutdown(now=True)
                    return
                await self.attach(new, creating=False)
                if self.deleted:  # deleted while the cwd was being applied
                    self.kernel = None
                    await new.shutdown(now=True)
                    return
            except Exception:
                log.exception("context %s: kernel replacement failed", self.id)
                self.dead = True
                self.kernel = None
                self._ready.set()  # waiters see `dead` and fail fast
                raise
            finally:
                if old is not None:
                    self.track(asyncio.create_task(old.shutdown(now=now)))

    @property
    def replacing(self) -> bool:
        return self._replace_lock.locked()

    def abandon(self, kernel: Kernel) -> None:
        """The kernel keeps dying: fail its requests and mark the context dead (no kernel)."""
        kernel.fail_all(DEAD)
        self.dead = True
        self.kernel = None
        self.track(asyncio.create_task(kernel.shutdown(now=True)))

    async def restart(self) -> None:
        """Explicit restart (docs/code-interpreter-api.md §2.6): in-flight run ends with UnexpectedEndOfExecution.

        A lazy context that has no kernel yet has nothing to restart (its first
        use starts a fresh one); one whose first start is under way waits for it.
        """
        if self.lazy:
            if self._first_start is None or self._first_start.done():
                return
            try:
                await asyncio.shield(self._first_start)
            except Exception:
                return  # reported at the next use
            if self.lazy:
                return
        self.dead = False
        await self.replace_kernel(self.kernel, CLOSED)

    async def close(self, now: bool = False) -> None:
        """Delete/stop: fail in-flight work, stop the watchdog, shut the kernel down."""
        self.deleted = True
        self._ready.set()
        self._watchdog.stop()
        self._cancel_cleanup()
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            await kernel.shutdown(now=now)

    async def kernel_for_execution(self) -> Kernel | None:
        """The kernel to run on, after any restart in progress; None if deleted/dead."""
        if self.lazy:
            try:
                await self.ensure_started()  # the route has done it already, reporting failures
            except Exception:
                log.warning("context %s: kernel could not be started", self.id, exc_info=True)
                return None
        while True:
            await self._ready.wait()
            if self.deleted:
                return None
            if self.dead:
                try:  # one on-demand restart attempt before giving up (docs/code-interpreter-api.md §4.11)
                    await self.restart()
                except Exception:
                    return None
                continue
            kernel = self.kernel
            if kernel is not None and kernel.failed_reason is None:
                return kernel
            await asyncio.sleep(0.05)  # a replacement is about to clear the event

    # ------------------------------------------------------------ env vars

    def pending_global_env(self, kernel: Kernel) -> dict[str, str]:
        """Global vars still to inject into this kernel (first run after each start)."""
        if self._globals_applied_for is kernel:
            return {}
        return self._registry.global_env()

    def mark_global_env_applied(self, kernel: Kernel) -> None:
        self._globals_applied_for = kernel

    def schedule_cleanup(self, kernel: Kernel, keys: list[str]) -> None:
        """Restore per-execution vars in the background; the next run awaits it.

        docs/code-interpreter-api.md §4.5.4.
        """
        if kernel is not self.kernel or kernel.failed_reason is not None:
            return  # a fresh kernel never saw those variables
        code = languages.env_restore_code(self.language, keys)
        if code is None:
            return
        previous = self._cleanup
        self._cleanup = asyncio.create_task(self._run_cleanup(kernel, code, previous))
        self.track(self._cleanup)

    async def _run_cleanup(self, kernel: Kernel, code: str, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        request = kernel.submit(code, silent=True)
        try:
            outcome = await asyncio.wait_for(consume(request, None), timeout=CLEANUP_TIMEOUT)
            if outcome.error is not None:
                log.warning("context %s env cleanup failed: %s", self.id, outcome.error)
        except asyncio.TimeoutError:
            log.warning("context %s env cleanup timed out", self.id)
        finally:
            kernel.forget(request)

    async def await_cleanup(self) -> None:
        task = self._cleanup
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
            if self._cleanup is task:
                self._cleanup = None

    def _cancel_cleanup(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            self._cleanup = None


class Registry:
    """All contexts in creation order, language defaults and the spare-kernel pool."""

    def __init__(self, default_cwd: str, global_envs: Callable[[], dict[str, str]]) -> None:
        """No side effects: the runtime directory and JUPYTER_PATH wait for `open`."""
        self.default_cwd = default_cwd
        self._global_envs = global_envs
        self.contexts: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}
        self._language_locks: dict[str, asyncio.Lock] = {}
        self._spares: dict[str, asyncio.Task[Kernel]] = {}
        self._creations: set[asyncio.Task[Context]] = set()  # context creations, cancelled at stop
        self._spare_shutdowns: set[asyncio.Task[None]] = set()  # dead spares going away, awaited at stop
        self._live: set[Kernel] = set()
        self._runtime: RuntimeDir | None = None
        self._env: dict[str, str] = {}
        self._specs: dict[str, str] = {}
        self.stopping = False

    def open(self) -> None:
        """Prepare what kernels run with; blocking (disk, kernel-spec discovery), so run it in a thread.

        Creates the runtime directory (matplotlibrc, kernels.log), writes kernel
        specs for pip-installed kernel packages and puts them on JUPYTER_PATH in
        `os.environ` (where jupyter_client looks), then takes the kernels'
        environment and reads the installed kernel specs. Call it once, before
        `start`; `close` undoes the directory.
        """
        if self._runtime is not None:
            return
        runtime = RuntimeDir()
        try:
            languages.provide_package_kernels(runtime.path)
            self._env = kernel_environment(runtime)
            self._specs = languages.installed_kernel_specs()
        except BaseException:
            runtime.close()
            raise
        self._runtime = runtime

    def close(self) -> None:
        """Remove the runtime directory; after `stop` and `kill_all`, as kernels write their log there."""
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()

    def global_env(self) -> dict[str, str]:
        try:
            return dict(self._global_envs() or {})
        except Exception:
            log.exception("global env lookup failed")
            return {}

    def installed_languages(self) -> list[str]:
        return languages.installed_languages(self._specs)

    # ------------------------------------------------------------ kernels

    def _spec_for(self, language: str) -> str:
        try:
            return languages.resolve_kernel_spec(language, self._specs)
        except NoSuchKernel:
            self._specs = languages.installed_kernel_specs()  # installed since start-up?
            try:
                return languages.resolve_kernel_spec(language, self._specs)
            except NoSuchKernel:
                detail = languages.unavailable_message(language, self.installed_languages())
                raise ContextError(f"Failed to create context: {detail}") from None

    async def _start_kernel(self, language: str) -> Kernel:
        spec = self._spec_for(language)
        if self._runtime is None:
            raise RuntimeError("Registry.open() must come before starting kernels")
        try:
            kernel = Kernel(spec, language, self._env, self.default_cwd, output=self._runtime.log_file, live=self._live)
            return await kernel.start()
        except KernelStartError as exc:
            raise ContextError(f"Failed to create context: {exc}") from exc

    async def obtain_kernel(self, language: str) -> Kernel:
        """A ready kernel for `language`: the spare if there is one, else a fresh start.

        Raises ContextError for unknown languages before touching the spare pool.
        """
        self._spec_for(language)
        spare = self._spares.pop(language, None)
        kernel: Kernel | None = None
        if spare is not None:
            try:
                kernel = await asyncio.shield(spare)
            except Exception:
                kernel = None
            if kernel is not None and not await kernel.is_alive():
                self._discard(kernel)
                kernel = None
        if kernel is None:
            kernel = await self._start_kernel(language)
        self._refill_spare(language)
        return kernel

    def _refill_spare(self, language: str) -> None:
        """Pre-start the next kernel, for spare languages only (python by default).

        Other languages start on demand: a spare Deno kernel alone costs ~210 MB,
        too much to hold idle in every sandbox.
        """
        if self.stopping or language in self._spares or language not in SPARE_LANGUAGES:
            return
        task = asyncio.create_task(self._start_kernel(language))
        task.add_done_callback(_log_spare_failure)
        self._spares[language] = task

    def _discard(self, kernel: Kernel) -> None:
        """Shut a dead spare down in the background, so `obtain_kernel` need not wait for it."""
        task = asyncio.create_task(kernel.shutdown(now=True))
        self._spare_shutdowns.add(task)
        task.add_done_callback(self._spare_shutdowns.discard)

    # ------------------------------------------------------------ contexts

    async def create(self, language: str, cwd: str) -> Context:
        """Create and register a context; runs to completion even if the caller is cancelled."""
        return await self._shielded(self._create(language, cwd))

    async def _shielded(self, work: Coroutine[Any, Any, Context]) -> Context:
        """Run `work` in a task of its own: a cancelled caller does not stop it (docs/code-interpreter-api.md §2.3)."""
        return await asyncio.shield(self.spawn(work))

    def spawn(self, work: Coroutine[Any, Any, Context]) -> asyncio.Task[Context]:
        """A context creation or first start as a task of its own, cancelled at `stop`."""
        task = asyncio.create_task(work)
        self._creations.add(task)
        task.add_done_callback(self._creations.discard)
        task.add_done_callback(_retrieve_exception)  # nobody may be left to await it
        return task

    async def _create(self, language: str, cwd: str) -> Context:
        kernel = await self.obtain_kernel(language)
        context = Context(self, language, cwd)
        await context.attach(kernel)
        if self.stopping:
            await context.close(now=True)
            raise ContextError("Failed to create context: server is shutting down")
        self.contexts[context.id] = context
        return context

    async def default_for(self, language: str) -> Context:
        """The language's default context, created lazily under a per-language lock.

        docs/code-interpreter-api.md §4.3. The lookup, the creation and the
        recording of the default are one shielded task: a client giving up
        mid-creation still leaves exactly one default, and concurrent requests
        wait on the lock instead of creating another.
        """
        context_id = self._defaults.get(language)
        context = self.contexts.get(context_id) if context_id else None
        if context is not None:
            return context
        return await self._shielded(self._default_for(language))

    async def _default_for(self, language: str) -> Context:
        lock = self._language_locks.setdefault(language, asyncio.Lock())
        async with lock:
            context_id = self._defaults.get(language)
            context = self.contexts.get(context_id) if context_id else None
            if context is None:
                context = await self._create(language, self.default_cwd)
                self._defaults[language] = context.id
            return context

    def get(self, context_id: str) -> Context | None:
        if context_id == "default":  # upstream quirk kept, docs/differences.md §6.3 item 8
            default = self._defaults.get(languages.PYTHON)
            return self.contexts.get(default) if default else None
        return self.contexts.get(context_id)

    async def delete(self, context: Context) -> None:
        self.contexts.pop(context.id, None)
        for language, context_id in list(self._defaults.items()):
            if context_id == context.id:
                del self._defaults[language]
        await context.close()

    # ------------------------------------------------------------ start/stop

    async def start(self, extra_defaults: tuple[str, ...]) -> None:
        """After `open`: Python default (fatal on failure), then optional defaults, then spares.

        The optional defaults (JavaScript) are listed at once but start their
        kernel on first use (docs/code-interpreter-api.md §4.3): an idle
        sandbox holds no JavaScript kernel.
        """
        await self.default_for(languages.PYTHON)
        for language in extra_defaults:
            try:
                self._add_lazy_default(language)
            except ContextError as exc:
                log.warning("default %s context not created: %s", language, exc)
        for language in SPARE_LANGUAGES:
            self._refill_spare(language)

    def _add_lazy_default(self, language: str) -> None:
        """Record a default context without a kernel, unless one exists or is being created."""
        self._spec_for(language)  # not installed: ContextError, as a creation would say
        lock = self._language_locks.get(language)
        if language in self._defaults or (lock is not None and lock.locked()):
            return
        context = Context(self, language, self.default_cwd, lazy=True)
        self.contexts[context.id] = context
        self._defaults[language] = context.id

    def kill_all(self) -> None:
        """Daemon exit: no kernel may outlive it (docs/code-interpreter-api.md §4.13), whatever shutdown managed."""
        for kernel in list(self._live):
            kernel.kill()
            kernel.close_channels()
        self._live.clear()

    async def stop(self) -> None:
        """Fail in-flight work and kill every kernel (kill: the daemon must stop fast).

        Spare shutdowns already under way are awaited, not cancelled: they are
        kills too, and the caller's time budget bounds the wait.
        """
        self.stopping = True
        for creation in self._creations:
            creation.cancel()
        spares = list(self._spares.values())
        self._spares.clear()
        for task in spares:
            task.cancel()
        closing = [c.close(now=True) for c in self.contexts.values()]
        self.contexts.clear()
        self._defaults.clear()
        await asyncio.gather(*closing, *self._spare_shutdowns, return_exceptions=True)
        for task in spares:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().shutdown(now=True)


def _retrieve_exception(task: asyncio.Task) -> None:
    """Mark a shielded task's failure as seen; the awaiting caller (if any) reports it."""
    if not task.cancelled():
        task.exception()


def _log_spare_failure(task: asyncio.Task) -> None:
    """Retrieve a failed spare's exception (no "never retrieved" noise); obtain retries."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("spare kernel failed to start: %s", task.exception())
