"""HTTP surface of the code interpreter (docs/code-interpreter-api.md §1 and §2).

Handlers validate and resolve, then hand work to the registry/contexts. The
`/execute` handler sends its headers promptly and then only relays lines of an
`Execution` whose job it does not own, so a client going away (aiohttp cancels
the handler with `handler_cancellation=True`) merely notifies the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kernel_bridge import languages, messages
from kernel_bridge.errors import ContextError
from kernel_bridge.spool import OutputSpool

if TYPE_CHECKING:
    from kernel_bridge.contexts import Context, Registry
    from kernel_bridge.execution import Execution

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 5.0
HEADERS_DELAY = 0.05  # how long the 200 may wait to share a send with the first lines
CHUNK_BYTES = 256 * 1024  # at most about this much per write: a slow client holds little
HOLD_WINDOW = 0.02  # how long a count or main result may wait for the line after it
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024  # stdout+stderr bytes per execution before truncation
STOP_TIMEOUT = 3.0
NDJSON = "application/x-ndjson"
PREFLIGHT_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _HeadersWithBody(web.StreamResponse):
    """A streamed response whose headers go out with the first body write.

    Used when that first write follows at once. aiohttp has no public switch
    for it: since 3.12 (aio-libs/aiohttp#10991) `prepare` only buffers the
    status line and headers, and it sends them at once unless the class
    attribute `_send_headers_immediately` is false, as it is for the
    non-streamed `web.Response`; the next `write`/`write_eof` then sends them
    with its bytes. Checked in the source of aiohttp 3.12.0 to 3.14.3, the
    installed 3.14.5 and the 4.0 development branch.

    Should a version drop the attribute, this class is a plain StreamResponse
    again: still correct, one more send per run. In aiohttp 3.9 to 3.11, which
    pyproject.toml still allows, that is always the case, as headers were
    written at `prepare` then. tests/kernel_bridge/test_headers_with_body.py
    fails if the installed aiohttp stops holding the headers back.
    """

    _send_headers_immediately = False


class ValidationFailed(Exception):
    """Request body rejected; carries FastAPI-style `detail` entries for the 422 body."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("validation failed")
        self.detail = detail


def _text(status: int, body: str) -> web.Response:
    """Route-level errors are plain text (docs/code-interpreter-api.md §1.4)."""
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


def _unprocessable(detail: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"detail": detail}, status=422)


async def _read_object(request: web.Request, lenient_empty: bool) -> dict[str, Any]:
    """Parse the body as a JSON object or raise ValidationFailed (422)."""
    raw = await request.read()
    if not raw.strip():
        if lenient_empty:
            return {}
        raise ValidationFailed([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": body,
                }
            ]
        )
    return body


def _string_field(body: dict[str, Any], key: str, required: bool, errors: list) -> str | None:
    """Optional/required string field; collects a FastAPI-like error entry."""
    if key not in body:
        if required:
            errors.append({"type": "missing", "loc": ["body", key], "msg": "Field required", "input": body})
        return None
    value = body[key]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        errors.append(
            {"type": "string_type", "loc": ["body", key], "msg": "Input should be a valid string", "input": value}
        )
        return None
    return value


def _env_field(body: dict[str, Any], errors: list) -> dict[str, str]:
    value = body.get("env_vars")
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(
            {
                "type": "dict_type",
                "loc": ["body", "env_vars"],
                "msg": "Input should be a valid dictionary",
                "input": value,
            }
        )
        return {}
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(
                {
                    "type": "string_type",
                    "loc": ["body", "env_vars", key],
                    "msg": "Input should be a valid string",
                    "input": item,
                }
            )
    return value


class CodeInterpreter:
    """The code-interpreter half of the daemon: routes, middlewares, lifecycle."""

    def __init__(
        self,
        *,
        default_cwd: str,
        global_envs: Callable[[], dict[str, str]],
        max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    ) -> None:
        # The caller picks an existing directory (envd/app.py `_code_default_cwd`:
        # /home/user, else the default user's home); it is not second-guessed here.
        self.default_cwd = default_cwd
        self._global_envs = global_envs
        self.max_output_bytes = max_output_bytes
        self._warmup: asyncio.Task[None] | None = None
        self._registry_ready: asyncio.Future[Registry] | None = None  # set by `start`
        self._stopping = False
        self._relays = 0  # /execute responses being streamed right now

    # ------------------------------------------------------------ assembly interface

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/execute", self.execute),
            web.get("/contexts", self.list_contexts, allow_head=False),
            web.post("/contexts", self.create_context),
            web.delete("/contexts/{context_id}", self.delete_context),
            web.post("/contexts/{context_id}/restart", self.restart_context),
        ]

    def middlewares(self) -> list:
        return [cors_middleware, json_errors_middleware]

    async def health(self, request: web.Request) -> web.StreamResponse:
        """docs/code-interpreter-api.md §2.1: JSON string "OK" while serving.

        The default contexts start behind it (see `start`): a request that
        needs a kernel waits for it, so a sandbox is reachable at once.
        """
        if self._stopping:
            return web.json_response("Stopping", status=503)
        return web.json_response("OK")

    def start(self) -> None:
        """Load the kernel machinery and create the default contexts in the background.

        Called once the daemon listens: jupyter_client, the kernel specs and
        the kernels themselves cost a second or more, which `/health` and the
        envd API need not wait for. Handlers wait for the registry instead.
        """
        self._registry_ready = ready = asyncio.get_running_loop().create_future()
        self._warmup = asyncio.create_task(self._warm_up(ready))

    async def _warm_up(self, ready: asyncio.Future[Registry]) -> None:
        try:
            registry = await asyncio.to_thread(_new_registry, self.default_cwd, self._global_envs)
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        ready.set_result(registry)
        extra = tuple(lang for lang in (languages.JAVASCRIPT,) if lang in registry.installed_languages())
        try:
            await registry.start(extra_defaults=extra)
        except ContextError as exc:
            # Not fatal: envd keeps serving, and the next run_code retries (and reports it).
            log.error("default python context not created: %s", exc)

    async def _registry(self) -> Registry:
        """The context registry, once the background start has built it."""
        if self._registry_ready is None:
            raise RuntimeError("CodeInterpreter.start() has not been called")
        return await asyncio.shield(self._registry_ready)

    async def _defaults_created(self) -> None:
        """Wait for the start-up contexts, so listings right after start are complete."""
        if self._warmup is not None:
            await asyncio.gather(asyncio.shield(self._warmup), return_exceptions=True)

    async def stop(self) -> None:
        self._stopping = True
        ready, warmup = self._registry_ready, self._warmup
        if ready is None or warmup is None:
            return  # never started
        warmup.cancel()
        await asyncio.gather(warmup, return_exceptions=True)
        if not ready.done() or ready.cancelled() or ready.exception() is not None:
            return
        registry = ready.result()
        try:
            await asyncio.wait_for(registry.stop(), timeout=STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("kernel shutdown exceeded %.1fs, killing the rest", STOP_TIMEOUT)
        registry.kill_all()
        registry.close()

    # ------------------------------------------------------------ /execute

    async def execute(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _read_object(request, lenient_empty=False)
            code, context_id, language, env_vars = self._parse_execute(body)
        except ValidationFailed as exc:
            return _unprocessable(exc.detail)
        if context_id and language:
            return _text(400, "Only one of context_id or language can be provided")
        try:
            context = await self._resolve_context(context_id, language)
            if context is not None:
                await context.ensure_started()  # a lazy default's kernel starts on first use
        except ContextError as exc:
            return _text(500, str(exc))
        if context is None:
            return _text(404, f"Context {context_id} not found")
        execution = context.execute(code, env_vars, self.max_output_bytes)
        return await self._relay(request, execution)

    @staticmethod
    def _parse_execute(body: dict[str, Any]) -> tuple[str, str | None, str | None, dict[str, str]]:
        errors: list[dict[str, Any]] = []
        code = _string_field(body, "code", True, errors)
        context_id = _string_field(body, "context_id", False, errors)
        language = _string_field(body, "language", False, errors)
        env_vars = _env_field(body, errors)
        if errors:
            raise ValidationFailed(errors)
        assert code is not None
        return code, context_id, language, env_vars

    async def _resolve_context(self, context_id: str | None, language: str | None) -> Context | None:
        """docs/code-interpreter-api.md §2.2.2; lazily (re)creates language defaults, returns None for unknown ids."""
        registry = await self._registry()
        if language:
            return await registry.default_for(languages.normalise(language))
        if context_id:
            return registry.get(context_id)
        return await registry.default_for(languages.PYTHON)

    async def _relay(self, request: web.Request, execution: Execution) -> web.StreamResponse:
        """Lines as they come, keepalive after 5 s of silence (docs/code-interpreter-api.md §3.6).

        The headers wait up to HEADERS_DELAY for the first lines so that both
        leave in one send (a fast run then costs the client one wake-up less),
        and so they never go out ahead of the kernel request.
        """
        try:
            ready = await execution.lines.wait(HEADERS_DELAY)
        except asyncio.CancelledError:
            execution.notify_client_gone()
            raise
        response = (_HeadersWithBody if ready else web.StreamResponse)(status=200, headers={"Content-Type": NDJSON})
        if "Origin" in request.headers:
            response.headers["Access-Control-Allow-Origin"] = "*"
        self._relays += 1
        try:
            await response.prepare(request)
            while True:
                chunk = await self._next_chunk(execution, hold=self._relays > 1)
                if execution.lines.finished:  # the last lines and the final chunk in one send
                    await response.write_eof(chunk)
                    break
                await response.write(chunk)
        except asyncio.CancelledError:
            execution.notify_client_gone()
            raise
        except (ConnectionError, RuntimeError, OSError) as exc:
            execution.notify_client_gone()
            log.debug("client of %s went away: %r", execution.context.id, exc)
        finally:
            self._relays -= 1
            execution.lines.close()
        return response

    @staticmethod
    async def _next_chunk(execution: Execution, hold: bool) -> bytes:
        """Everything already waiting (one write), or a keepalive after 5 s of silence.

        With `hold` (other runs stream at the same time, so CPU is what is
        short) the count and main result wait briefly for their successor.
        Alone, a run's result goes out at once: the client can parse it
        while the kernel finishes, which is worth more than a saved write.
        """
        if not await execution.lines.wait(KEEPALIVE_INTERVAL):
            return messages.encode_line(messages.KEEPALIVE)
        if hold:
            await _hold_for_successor(execution.lines)
        return execution.lines.take(CHUNK_BYTES)

    # ------------------------------------------------------------ /contexts

    async def list_contexts(self, request: web.Request) -> web.StreamResponse:
        await self._defaults_created()
        registry = await self._registry()
        return web.json_response([c.describe() for c in registry.contexts.values()])

    async def create_context(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _read_object(request, lenient_empty=True)
            errors: list[dict[str, Any]] = []
            language = _string_field(body, "language", False, errors)
            cwd = _string_field(body, "cwd", False, errors)
            if errors:
                raise ValidationFailed(errors)
        except ValidationFailed as exc:
            return _unprocessable(exc.detail)
        try:
            registry = await self._registry()
            context = await registry.create(languages.normalise(language), cwd or self.default_cwd)
        except ContextError as exc:
            return _text(500, str(exc))
        return web.json_response(context.describe())

    async def delete_context(self, request: web.Request) -> web.StreamResponse:
        context_id = request.match_info["context_id"]
        registry = await self._registry()
        context = registry.get(context_id)
        if context is None:
            return _text(404, f"Context {context_id} not found")
        try:
            await asyncio.shield(registry.delete(context))
        except Exception:
            log.exception("deleting context %s failed", context_id)
            return _text(500, f"Failed to remove context {context_id}")
        return web.json_response(None)

    async def restart_context(self, request: web.Request) -> web.StreamResponse:
        context_id = request.match_info["context_id"]
        context = (await self._registry()).get(context_id)
        if context is None:
            return _text(404, f"Context {context_id} not found")
        try:
            await asyncio.shield(context.restart())
        except Exception:
            log.exception("restarting context %s failed", context_id)
            return _text(500, f"Failed to restart context {context_id}")
        return web.json_response(None)


async def _hold_for_successor(lines: OutputSpool) -> None:
    """Hold the count and the main result up to HOLD_WINDOW for the line that follows them.

    A fast run then leaves in one write (count, result and end together)
    instead of three: a send and a client wake-up each. Output and errors are
    never held, and a line that comes releases everything before it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HOLD_WINDOW
    while len(lines) < 4 and all(map(messages.is_followed_at_once, lines)):
        remaining = deadline - loop.time()
        if remaining <= 0 or not await lines.wait(remaining, more_than=len(lines)):
            return


# ---------------------------------------------------------------- middlewares


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """docs/code-interpreter-api.md §1.3: allow every origin/method/header, answer pre-flights directly."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and origin is not None and "Access-Control-Request-Method" in request.headers:
        headers = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": PREFLIGHT_METHODS,
            "Access-Control-Max-Age": "600",
        }
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested is not None:
            headers["Access-Control-Allow-Headers"] = requested
        return web.Response(status=200, text="OK", content_type="text/plain", charset="utf-8", headers=headers)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if origin is not None:
            exc.headers["Access-Control-Allow-Origin"] = "*"
        raise
    if origin is not None and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """docs/code-interpreter-api.md §1.4: FastAPI-style JSON bodies for unknown paths and wrong methods."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return web.json_response({"detail": "Method Not Allowed"}, status=405, headers={"Allow": allow})
    except web.HTTPNotFound:
        return web.json_response({"detail": "Not Found"}, status=404)


def _new_registry(default_cwd: str, global_envs: Callable[[], dict[str, str]]) -> Registry:
    """Import the Jupyter machinery, build the registry and open it (blocking: run in a thread)."""
    from kernel_bridge.contexts import Registry

    registry = Registry(default_cwd, global_envs)
    registry.open()
    return registry
