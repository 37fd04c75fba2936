"""What a handler knows about its request besides the input, and how it calls other plugins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .errors import BadGateway, CallError, DeadlineExceeded, PluginError, Unavailable

ENV_GATEWAY_URL = "BERTH_GATEWAY_URL"
ENV_PLUGIN_TOKEN = "BERTH_PLUGIN_TOKEN"
HEADER_REQUEST_ID = "Berth-Request-Id"
HEADER_DEADLINE_MS = "Berth-Deadline-Ms"

# The gateway answers a call's output in one JSON body; refuse absurd ones.
_MAX_CALL_ANSWER_BYTES = 64 * 1024 * 1024

_call_pool_lock = threading.Lock()
_call_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _call_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads :meth:`Context.call_async` runs calls on, created on first use."""
    global _call_executor
    with _call_pool_lock:
        if _call_executor is None:
            from .plugin import worker_threads

            _call_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=worker_threads(), thread_name_prefix="berth-call"
            )
        return _call_executor


class Context:
    """The request's id, caller and deadline, and its cancellation.

    Handlers receive one as their second argument. Build one directly in unit tests:
    ``Context(request_id="t-1", budget=0.5)``.
    """

    def __init__(
        self,
        request_id: str | None = None,
        caller: str | None = None,
        budget: float | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        self.request_id = request_id
        """``Berth-Request-Id``, when the caller sent one. Passed on by :meth:`call`."""
        self.caller = caller
        """``Berth-Caller``: who asked (a plugin's name or ``user:<subject>``), when known."""
        if deadline is None and budget is not None:
            deadline = time.monotonic() + budget
        self.deadline = deadline
        """The ``time.monotonic()`` instant after which the answer is no longer wanted."""
        self._cancel = threading.Event()
        self.log = _RequestLogger(logging.getLogger("berth_plugin.handler"), {"request_id": request_id})
        """A logger whose lines carry this request's id."""

    def remaining(self) -> float | None:
        """Seconds left before the deadline (0.0 once it passed); ``None`` without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def remaining_ms(self) -> int | None:
        """Whole milliseconds left, as sent on as ``Berth-Deadline-Ms``; ``None`` without a deadline."""
        left = self.remaining()
        return None if left is None else int(left * 1000)

    @property
    def cancelled(self) -> bool:
        """True once the deadline passed or the SDK gave up on the request.

        Sync handlers run in a thread that cannot be stopped from outside: long loops
        should look at this (or call :meth:`check`) and stop early.
        """
        if self._cancel.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._cancel.set()
            return True
        return False

    def check(self) -> None:
        """Raises :class:`DeadlineExceeded` when the request is cancelled; a cheap checkpoint."""
        if self.cancelled:
            raise DeadlineExceeded()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds`` in a sync handler, waking early on cancellation.

        Returns True when the request was cancelled (stop working), False after a full sleep.
        """
        end = time.monotonic() + max(0.0, seconds)
        while True:
            if self.cancelled:
                return True
            now = time.monotonic()
            if now >= end:
                return False
            step = end - now
            if self.deadline is not None:
                step = min(step, max(0.0, self.deadline - now))
            self._cancel.wait(min(step, threading.TIMEOUT_MAX))

    def cancel(self) -> None:
        """Marks the request cancelled; the SDK calls it when the deadline runs out."""
        self._cancel.set()

    def call(self, plugin: str, capability: str, input: object) -> object:
        """Invokes ``plugin``'s ``capability`` through the gateway and returns its output.

        Blocking: use it from sync handlers, and :meth:`call_async` from async ones. Sends
        ``BERTH_PLUGIN_TOKEN``, this request's id and what is left of its deadline.
        Raises :class:`Unavailable` (503 ``gateway_unavailable``) when ``BERTH_GATEWAY_URL``
        is unset, :class:`CallError` (502 ``plugin_call_failed``) when the callee or the
        gateway answers an error, :class:`BadGateway` when the gateway cannot be reached
        or answers something that is not JSON, and :class:`DeadlineExceeded` when the
        deadline runs out first. Left uncaught, each is answered with its status.
        """
        gateway = os.environ.get(ENV_GATEWAY_URL, "").strip()
        if not gateway:
            raise Unavailable(
                "gateway_unavailable",
                f"{ENV_GATEWAY_URL} is not set, so {plugin} cannot be called; run under the Berth gateway",
            )
        try:
            body = json.dumps(input, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise PluginError(500, "internal", f"the input for {plugin}/{capability} is not JSON: {e}") from e
        url = "{}/v1/plugins/{}/invoke/{}".format(
            gateway.rstrip("/"),
            urllib.parse.quote(plugin, safe=""),
            urllib.parse.quote(capability, safe=""),
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = os.environ.get(ENV_PLUGIN_TOKEN)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.request_id:
            headers[HEADER_REQUEST_ID] = self.request_id
        left = self.remaining()
        timeout = None
        if left is not None:
            left_ms = int(left * 1000)
            if left_ms <= 0 or self.cancelled:
                raise DeadlineExceeded()
            headers[HEADER_DEADLINE_MS] = str(left_ms)
            timeout = max(0.001, min(left, threading.TIMEOUT_MAX))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        # The gateway is reached directly: NO_PROXY names it, but do not rely on that.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout) as response:
                raw = response.read(_MAX_CALL_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as e:
            raw = e.read(64 * 1024) if e.fp is not None else b""
            code, message = _error_detail(raw)
            if e.code == 504 and self.cancelled:
                raise DeadlineExceeded() from None
            raise CallError(plugin, capability, e.code, code, message) from None
        except TimeoutError:
            if self.cancelled or left is not None:
                raise DeadlineExceeded() from None
            raise BadGateway("gateway_unreachable", f"the gateway at {gateway} did not answer") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)) and left is not None:
                raise DeadlineExceeded() from None
            raise BadGateway("gateway_unreachable", f"could not reach the gateway at {gateway}: {reason}") from None
        if len(raw) > _MAX_CALL_ANSWER_BYTES:
            raise BadGateway(
                "gateway_error", f"{plugin}/{capability} answered more than {_MAX_CALL_ANSWER_BYTES} bytes"
            )
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadGateway(
                "gateway_error", f"{plugin}/{capability} answered something that is not JSON: {e}"
            ) from None

    async def call_async(self, plugin: str, capability: str, input: object) -> object:
        """:meth:`call` for async handlers: runs the blocking call in a worker thread.

        The threads come from a pool sized like the sync handlers' pool (``BERTH_MAX_CONCURRENCY``,
        at most half of ``BERTH_PIDS``), not from asyncio's default executor.
        """
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(_call_pool(), ctx.run, self.call, plugin, capability, input)

    def __repr__(self) -> str:
        return f"Context(request_id={self.request_id!r}, caller={self.caller!r}, remaining={self.remaining()!r})"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _error_detail(raw: bytes) -> tuple[str | None, str]:
    try:
        error = json.loads(raw.decode("utf-8"))["error"]
        code, message = error["code"], error["message"]
        if isinstance(code, str) and isinstance(message, str):
            return code, message
    except Exception:
        pass
    text = raw.decode("utf-8", "replace").strip()
    return None, (text[:200] if text else "no error body")


class _RequestLogger(logging.LoggerAdapter):
    """Adds the request id to each line and keeps the caller's own ``extra`` fields."""

    def process(self, msg, kwargs):
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs
