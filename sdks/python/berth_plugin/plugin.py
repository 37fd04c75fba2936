"""The plugin: its registrations, what ``/v1/describe`` answers, routing and dispatch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import json
import os
import re
import sys
import threading
import typing
import urllib.parse

from .context import Context
from .errors import DeadlineExceeded, InvalidInput, PluginError
from .hooks import MODES, OBSERVE, Continue, HookAction
from .logs import configure_logging, logger

DEFAULT_PORT = 8080
#: Largest request body accepted unless ``Plugin(max_body_bytes=...)`` says otherwise.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
#: Seconds requests in flight may still run after SIGTERM before the process exits anyway.
DEFAULT_DRAIN_TIMEOUT = 10.0
#: Worker threads for sync handlers when ``BERTH_MAX_CONCURRENCY`` is unset.
DEFAULT_MAX_CONCURRENCY = 8
#: Never more worker threads than this, whatever ``BERTH_MAX_CONCURRENCY`` says: every thread
#: counts against the container's pids limit.
MAX_WORKER_THREADS = 32

ENV_PORT = "BERTH_PORT"
ENV_MAX_CONCURRENCY = "BERTH_MAX_CONCURRENCY"
ENV_PIDS = "BERTH_PIDS"

PATH_HEALTHZ = "/healthz"
PATH_DESCRIBE = "/v1/describe"
PREFIX_INVOKE = "/v1/invoke/"
PREFIX_HOOKS = "/v1/hooks/"

_CAPABILITY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_HOOK_NAME = re.compile(r"[a-z0-9_.-]{1,135}")
_INFER = object()

_JSON_KINDS: dict[type, str] = {
    dict: "a JSON object",
    list: "a JSON array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
}


class Answer:
    """A response before it is put on the wire."""

    __slots__ = ("status", "body", "headers", "content_type", "close")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        *,
        headers: list[tuple[str, str]] | None = None,
        content_type: str | None = "application/json",
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []
        self.content_type = content_type
        self.close = close

    @classmethod
    def json(cls, status: int, value: object) -> Answer:
        return cls(status, _encode(value))

    @classmethod
    def error(cls, status: int, code: str, message: str, **kwargs) -> Answer:
        return cls(status, _encode({"error": {"code": code, "message": message}}), **kwargs)

    @classmethod
    def from_error(cls, error: PluginError) -> Answer:
        return cls.error(error.status, error.code, error.message)


class Route:
    """Where a request goes: ``kind`` is healthz, describe, invoke or hook."""

    __slots__ = ("kind", "name", "entry")

    def __init__(self, kind: str, name: str | None = None, entry: _Handler | None = None) -> None:
        self.kind = kind
        self.name = name
        self.entry = entry


class _Handler:
    __slots__ = ("name", "fn", "is_async", "pass_ctx", "input_type", "mode")

    def __init__(self, name: str, fn, input_type: type | None, mode: str | None = None) -> None:
        self.name = name
        self.fn = fn
        # An object whose __call__ is `async def` is an async handler too.
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
        self.pass_ctx = _takes_context(fn, name)
        self.input_type = input_type
        self.mode = mode

    def call(self, value, ctx: Context):
        return self.fn(value, ctx) if self.pass_ctx else self.fn(value)


class Plugin:
    """A plugin: its name, version, capabilities and hooks, served as protocol v1.

    ``name`` and ``version`` must equal the manifest's ``metadata.name`` and ``spec.version``.
    Register handlers with :meth:`capability` and :meth:`hook`, then call :meth:`run`.
    """

    def __init__(
        self,
        name: str,
        version: str,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_concurrency: int | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.max_body_bytes = max_body_bytes
        self.drain_timeout = drain_timeout
        self.max_concurrency = max_concurrency
        self._capabilities: dict[str, _Handler] = {}
        self._hooks: dict[str, _Handler] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._sync_running = 0

    def capability(self, name: str, *, input: type | None = _INFER):  # noqa: A002
        """Registers the decorated function as capability ``name`` (``POST /v1/invoke/{name}``).

        The function takes ``(input, ctx)`` (or just ``input``), may be ``def`` or
        ``async def``, and returns the output: any JSON value. ``input`` is the parsed body.
        When ``input=`` (or the annotation of the function's first parameter) is ``dict``,
        ``list``, ``str``, ``int``, ``float`` or ``bool``, other JSON types are refused with
        ``400 invalid_input`` before the function runs.
        """
        if not _CAPABILITY_NAME.fullmatch(name or ""):
            raise ValueError(f"capability name {name!r} must match ^[a-z][a-z0-9_-]{{0,62}}$ like the manifest's")
        if name in self._capabilities:
            raise ValueError(f"capability {name!r} is registered twice")

        def register(fn):
            kind = _input_type(fn, input)
            self._capabilities[name] = _Handler(name, fn, kind)
            return fn

        return register

    def hook(self, name: str, mode: str = OBSERVE):
        """Registers the decorated function for hook ``name`` (``POST /v1/hooks/{name}``).

        The function takes ``(event, ctx)`` (or just ``event``), with ``event`` the
        envelope's ``event`` object. A ``filter`` hook returns ``Continue()``,
        ``Modify(event)`` or ``Veto(reason)`` (``None`` means continue); an ``observe``
        hook's return value is ignored and it is answered 204.
        """
        mode = getattr(mode, "value", mode)
        if mode not in MODES:
            raise ValueError(f"hook mode must be 'filter' or 'observe', got {mode!r}")
        if not _HOOK_NAME.fullmatch(name or ""):
            raise ValueError(f"hook name {name!r} is not a catalogue name or custom.<name>")
        if name in self._hooks:
            raise ValueError(f"hook {name!r} is registered twice")

        def register(fn):
            self._hooks[name] = _Handler(name, fn, dict, mode)
            return fn

        return register

    def describe(self) -> dict:
        """What ``GET /v1/describe`` answers: everything registered, in registration order."""
        return {
            "name": self.name,
            "version": self.version,
            "capabilities": [{"name": n} for n in self._capabilities],
            "hooks": [{"name": n, "mode": h.mode} for n, h in self._hooks.items()],
        }

    def route(self, method: str, path: str) -> Route | Answer:
        """Steps 1-3 of the error precedence: the path, the method, the name."""
        if path in (PATH_HEALTHZ, PATH_DESCRIBE):
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET, HEAD")
            return Route("healthz" if path == PATH_HEALTHZ else "describe")
        for prefix, kind in ((PREFIX_INVOKE, "invoke"), (PREFIX_HOOKS, "hook")):
            if path.startswith(prefix):
                name = _unquote(path[len(prefix) :])
                if not name or "/" in name:
                    return _not_found()
                if method != "POST":
                    return _method_not_allowed("POST")
                if kind == "invoke":
                    entry = self._capabilities.get(name)
                    if entry is None:
                        return Answer.error(
                            404,
                            "unknown_capability",
                            f"this plugin has no capability {name!r}; GET /v1/describe lists the ones it has",
                        )
                else:
                    entry = self._hooks.get(name)
                    if entry is None:
                        return Answer.error(
                            404,
                            "unknown_hook",
                            f"this plugin does not subscribe to hook {name!r}; GET /v1/describe lists its hooks",
                        )
                return Route(kind, name, entry)
        return _not_found()

    def simple_answer(self, route: Route) -> Answer:
        """The answer of ``/healthz`` and ``/v1/describe``."""
        if route.kind == "healthz":
            return Answer(200, b'{"status":"ok"}')
        return Answer.json(200, self.describe())

    async def dispatch(self, route: Route, body: bytes, ctx: Context, budget_ms: int | None) -> Answer:
        """Steps 7-9: parses the body, runs the handler within the deadline, encodes its answer."""
        entry = route.entry
        assert entry is not None
        what = f"{'capability' if route.kind == 'invoke' else 'hook'} {route.name}"
        try:
            value = parse_json(body)
            if route.kind == "hook":
                if not isinstance(value, dict) or "event" not in value:
                    raise InvalidInput('the hook request must be an object with an "event" field: {"event": {...}}')
                value = value["event"]
                if not isinstance(value, dict):
                    raise InvalidInput(f'the hook request\'s "event" must be a JSON object, got {_kind_of(value)}')
            elif entry.input_type is not None and not _fits(value, entry.input_type):
                raise InvalidInput(f"the input must be {_JSON_KINDS[entry.input_type]}, got {_kind_of(value)}")
            result = await self._run(entry, value, ctx, budget_ms)
        except PluginError as e:
            return Answer.from_error(e)
        except Exception:
            logger.error(f"{what} raised an exception", exc_info=True)
            return _internal()
        if route.kind == "hook":
            if entry.mode == OBSERVE:
                return Answer(204, content_type=None)
            if result is None:
                result = Continue()
            if not isinstance(result, HookAction):
                returned = type(result).__name__
                logger.error(f"{what} returned {returned}; filters return Continue(), Modify(event) or Veto(reason)")
                return _internal()
            result = result.to_json()
        try:
            return Answer(200, _encode(result))
        except (TypeError, ValueError) as e:
            logger.error(f"{what} returned something that is not JSON: {e}")
            return _internal()

    async def _run(self, entry: _Handler, value, ctx: Context, budget_ms: int | None):
        if entry.is_async:
            task: asyncio.Future = asyncio.ensure_future(entry.call(value, ctx))
        else:
            ctx_copy = contextvars.copy_context()
            future = self._pool().submit(ctx_copy.run, self._run_sync, entry, value, ctx)
            task = asyncio.wrap_future(future)
        timeout = ctx.remaining()
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            ctx.cancel()
            task.cancel()
            raise
        if not done or (ctx.deadline is not None and ctx.cancelled):
            # The caller stops listening at the deadline: cancel the coroutine (a thread can
            # only be asked, through ctx.cancelled) and answer without waiting for it. A
            # handler that noticed the cancellation and returned gets the same answer.
            ctx.cancel()
            task.cancel()
            task.add_done_callback(_drop_result)
            raise DeadlineExceeded(budget_ms)
        try:
            return task.result()
        except asyncio.CancelledError:
            if ctx.cancelled:
                raise DeadlineExceeded(budget_ms) from None
            raise PluginError(500, "internal", "the handler was cancelled") from None

    def _run_sync(self, entry: _Handler, value, ctx: Context):
        with self._executor_lock:
            self._sync_running += 1
        try:
            if ctx.cancelled:
                raise DeadlineExceeded()
            result = entry.call(value, ctx)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            return result
        finally:
            with self._executor_lock:
                self._sync_running -= 1

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=worker_threads(self.max_concurrency), thread_name_prefix="berth-handler"
                )
            return self._executor

    def _close_pool(self) -> bool:
        """Stops the worker threads; False when a handler thread is still running."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
            running = self._sync_running
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        return running == 0

    def run(self) -> typing.NoReturn:
        """The whole ``main`` of a plugin: JSON logs, serve on ``0.0.0.0:$BERTH_PORT``
        until SIGTERM or SIGINT, drain, exit 0 (1 when the port is bad or taken)."""
        from .server import serve_forever

        configure_logging()
        try:
            port = port_from_env()
        except ValueError as e:
            logger.error(str(e))
            print(f"error: {e}", file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(1) from None
        code = serve_forever(self, port)
        clean = self._close_pool()
        sys.stdout.flush()
        if not clean:
            # A sync handler is still running after its deadline or the drain: do not wait
            # for it (the interpreter would join its thread).
            os._exit(code)
        raise SystemExit(code)

    def start(self, host: str = "127.0.0.1", port: int = 0):
        """Serves in a background thread, for tests: returns a handle with ``.port``,
        ``.url`` and ``.stop()`` (also a context manager)."""
        from .server import BackgroundServer

        return BackgroundServer(self, host, port)


def port_from_env() -> int:
    """``BERTH_PORT`` (8080 when unset). Raises ValueError naming the bad value."""
    raw = os.environ.get(ENV_PORT)
    if raw is None or raw.strip() == "":
        return DEFAULT_PORT
    text = raw.strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise ValueError(f"{ENV_PORT}={raw!r} is not a port number (use 1-65535, e.g. 8080)")


def worker_threads(explicit: int | None = None) -> int:
    """Threads for sync handlers: ``BERTH_MAX_CONCURRENCY`` (8 when unset), at most 32 and at
    most half of ``BERTH_PIDS``."""
    count = explicit
    if count is None:
        count = _env_int(ENV_MAX_CONCURRENCY) or DEFAULT_MAX_CONCURRENCY
    count = min(count, MAX_WORKER_THREADS)
    pids = _env_int(ENV_PIDS)
    if pids:
        count = min(count, max(1, pids // 2))
    return max(1, count)


def deadline_budget(values: list[str]) -> int | None:
    """Milliseconds from ``Berth-Deadline-Ms`` values; None when absent or too large to hold.

    Raises PluginError 400 ``bad_request`` when malformed or sent more than once.
    """
    if not values:
        return None
    if len(values) > 1:
        raise PluginError(400, "bad_request", "the Berth-Deadline-Ms header was sent more than once; send it once")
    text = values[0].strip(" \t")
    if not text or not all("0" <= c <= "9" for c in text):
        raise PluginError(
            400,
            "bad_request",
            f"the Berth-Deadline-Ms header must be a whole number of milliseconds, got {values[0]!r}",
        )
    # Beyond 2^53 a value means "no deadline beyond the runtime's" (protocol answer 2).
    if len(text) > 16 or int(text) > 2**53:
        return None
    return int(text)


def parse_json(body: bytes):
    """The body as JSON, or PluginError 400 ``malformed_json``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PluginError(400, "malformed_json", f"the request body is not UTF-8: {e}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise PluginError(400, "malformed_json", f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise PluginError(400, "malformed_json", "the request body is nested too deeply") from None


def _encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _internal() -> Answer:
    return Answer.error(500, "internal", "the plugin failed while handling the request; its logs have the details")


def _not_found() -> Answer:
    return Answer.error(
        404,
        "not_found",
        "no such endpoint; protocol v1 serves /healthz, /v1/describe, /v1/invoke/{capability} and /v1/hooks/{hook}",
    )


def _method_not_allowed(allow: str) -> Answer:
    return Answer.error(
        405,
        "method_not_allowed",
        "wrong method: /healthz and /v1/describe take GET, /v1/invoke and /v1/hooks take POST",
        headers=[("Allow", allow)],
    )


def _unquote(segment: str) -> str:
    if "%" not in segment:
        return segment
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return segment


def _kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _fits(value, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _input_type(fn, explicit) -> type | None:
    if explicit is not _INFER:
        if explicit is None or explicit is object or explicit is typing.Any:
            return None
        origin = typing.get_origin(explicit) or explicit
        if origin not in _JSON_KINDS:
            raise TypeError(f"input= must be dict, list, str, int, float, bool or None, got {explicit!r}")
        return origin
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not params:
            return None
        hint = typing.get_type_hints(fn).get(params[0].name)
    except Exception:
        return None
    origin = typing.get_origin(hint) or hint
    return origin if origin in _JSON_KINDS else None


def _takes_context(fn, name: str) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        return True
    if len(positional) == 1:
        return False
    raise TypeError(f"the handler for {name!r} must take (input, ctx) or (input)")


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) > 0:
        return int(raw)
    return None


def _drop_result(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


async def _awaited(awaitable):
    return await awaitable
