"""Connections, keep-alive, the SIGTERM drain and the process's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time

from .context import Context
from .errors import DeadlineExceeded, PluginError
from .http1 import READ_TIMEOUT, BodyTooLarge, ClientGone, HttpError, Input, Request, encode_response, parse_head
from .logs import logger, request_id_var
from .plugin import Answer, Plugin, Route, deadline_budget

HEADER_REQUEST_ID = "Berth-Request-Id"
# After an answer that leaves a body unread, keep reading (and dropping) it for a while so
# the client gets to read the answer instead of a reset.
_LINGER_BYTES = 64 * 1024 * 1024
_LINGER_SECONDS = 5.0


class Server:
    """One listening socket and its connections."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.connections: set[_Connection] = set()
        self.draining = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listens; returns the bound port."""
        self._server = await asyncio.start_server(self._on_connection, host, port, backlog=256, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.draining:
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def shutdown(self) -> bool:
        """Stops accepting, closes idle connections, lets requests in flight finish.

        True when everything finished within the drain timeout.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        # Let connections whose next request arrived in this same loop turn see it first,
        # so they count as busy rather than idle.
        for _ in range(3):
            await asyncio.sleep(0)
        busy = [c for c in self.connections if c.busy]
        for connection in list(self.connections):
            if not connection.busy:
                connection.task.cancel()
        logger.info("shutting down: finishing requests in flight", extra={"in_flight": len(busy)})
        tasks = [c.task for c in self.connections]
        drained = True
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.plugin.drain_timeout)
            if pending:
                drained = False
                logger.warning(
                    "requests still in flight after the drain timeout; exiting anyway",
                    extra={"drain_ms": int(self.plugin.drain_timeout * 1000), "in_flight": len(pending)},
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        logger.info("stopped")
        return drained


class _Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.plugin = server.plugin
        self.input = Input(reader)
        self.writer = writer
        self.busy = False
        self.task = asyncio.current_task()

    async def run(self) -> None:
        try:
            while not self.server.draining:
                self.busy = False
                if not await self.input.wait_for_request():
                    return
                self.busy = True
                if not await self._serve_one():
                    return
        except asyncio.CancelledError:
            pass  # an idle connection closed by the drain, or the drain timed out
        except (ClientGone, ConnectionError):
            pass
        except Exception:
            logger.error("the connection failed", exc_info=True)
        finally:
            self.busy = False
            self.writer.close()

    async def _serve_one(self) -> bool:
        started = time.monotonic()
        try:
            request = parse_head(await self.input.read_head())
        except HttpError as e:
            await self._send(Answer.error(e.status, e.code, e.message, close=True), None, None, linger=True)
            return False
        request_id = request.header("berth-request-id")
        token = request_id_var.set(request_id)
        try:
            return await self._answer(request, request_id, started)
        finally:
            request_id_var.reset(token)

    async def _answer(self, request: Request, request_id: str | None, started: float) -> bool:
        routed = self.plugin.route(request.method, request.path)
        if isinstance(routed, Route) and routed.kind in ("healthz", "describe"):
            answer = self.plugin.simple_answer(routed)
            return await self._answer_before_body(request, request_id, answer, started, log=False)
        if isinstance(routed, Answer):
            return await self._answer_before_body(request, request_id, routed, started, log=True)
        try:
            budget_ms = deadline_budget(request.header_all("berth-deadline-ms"))
            if budget_ms == 0:
                raise DeadlineExceeded(0)
        except PluginError as e:
            return await self._answer_before_body(request, request_id, Answer.from_error(e), started, log=True)

        deadline = None if budget_ms is None else started + budget_ms / 1000.0
        limit = self.plugin.max_body_bytes
        if request.framing == "length" and request.length > limit:
            return await self._finish(request, request_id, _too_large(limit), started, linger=True)
        if request.expect_continue:
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.writer.drain()
        try:
            body = await self.input.read_body(request, limit, deadline)
        except BodyTooLarge:
            return await self._finish(request, request_id, _too_large(limit), started, linger=True)
        except HttpError as e:
            answer = Answer.error(e.status, e.code, e.message, close=True)
            return await self._finish(request, request_id, answer, started, linger=True)
        except ClientGone:
            if deadline is not None and time.monotonic() >= deadline:
                answer = Answer.from_error(DeadlineExceeded(budget_ms))
                answer.close = True
                return await self._finish(request, request_id, answer, started)
            return False
        ctx = Context(request_id=request_id, caller=request.header("berth-caller"), deadline=deadline)
        answer = await self.plugin.dispatch(routed, body, ctx, budget_ms)
        return await self._finish(request, request_id, answer, started, route=routed)

    async def _answer_before_body(
        self, request: Request, request_id: str | None, answer: Answer, started: float, *, log: bool
    ) -> bool:
        """Answers without the body, after dropping it so the connection stays usable."""
        linger = False
        if request.framing != "none":
            if request.expect_continue:
                # The client waits for 100 Continue before sending: answer and close instead.
                answer.close = True
            elif not await self.input.discard_body(request, self.plugin.max_body_bytes, READ_TIMEOUT):
                answer.close = True
                linger = True
        return await self._finish(request, request_id, answer, started, linger=linger, log=log)

    async def _finish(
        self,
        request: Request,
        request_id: str | None,
        answer: Answer,
        started: float,
        *,
        route: Route | None = None,
        linger: bool = False,
        log: bool = True,
    ) -> bool:
        if linger:
            answer.close = True
        keep = await self._send(answer, request, request_id, linger=linger)
        if log:
            _log_answer(request, route, answer, started)
        return keep

    async def _send(self, answer: Answer, request: Request | None, request_id: str | None, *, linger: bool) -> bool:
        keep = request is not None and request.keep_alive and not answer.close and not self.server.draining
        headers = list(answer.headers)
        if request_id is not None:
            headers.append((HEADER_REQUEST_ID, request_id))
        data = encode_response(
            answer.status,
            answer.body,
            headers=headers,
            content_type=answer.content_type,
            keep_alive=keep,
            http10=request is not None and request.version == "HTTP/1.0",
            head_only=request is not None and request.method == "HEAD",
        )
        self.writer.write(data)
        await self.writer.drain()
        if linger:
            if self.writer.can_write_eof():
                with contextlib.suppress(OSError):
                    self.writer.write_eof()
            await self.input.linger(_LINGER_BYTES, 1.0 if self.server.draining else _LINGER_SECONDS)
        return keep


def _too_large(limit: int) -> Answer:
    return Answer.error(
        413,
        "payload_too_large",
        f"the request body is larger than this plugin's limit of {limit} bytes",
        close=True,
    )


def _log_answer(request: Request, route: Route | None, answer: Answer, started: float) -> None:
    fields: dict = {"method": request.method, "path": request.path, "status": answer.status}
    if route is not None and route.kind == "invoke":
        fields["capability"] = route.name
    elif route is not None and route.kind == "hook":
        fields["hook"] = route.name
    fields["elapsed_ms"] = round((time.monotonic() - started) * 1000.0, 3)
    if answer.status >= 500:
        body = _error_fields(answer)
        fields.update(body)
        logger.warning("failed", extra=fields)
    elif answer.status >= 400:
        fields["code"] = _error_fields(answer).get("code")
        logger.info("refused", extra=fields)
    else:
        logger.info("answered", extra=fields)


def _error_fields(answer: Answer) -> dict:
    try:
        error = json.loads(answer.body)["error"]
        return {"code": error["code"], "error": error["message"]}
    except Exception:
        return {}


async def serve(plugin: Plugin, host: str, port: int, stop: asyncio.Event, ready=None) -> bool:
    """Serves until ``stop`` is set, then drains. True when the drain finished in time."""
    server = Server(plugin)
    bound = await server.start(host, port)
    logger.info("listening", extra={"plugin": plugin.name, "version": plugin.version, "port": bound})
    if ready is not None:
        ready(bound)
    try:
        await stop.wait()
    finally:
        drained = await server.shutdown()
    return drained


def serve_forever(plugin: Plugin, port: int) -> int:
    """Serves on ``0.0.0.0:port`` until SIGTERM or SIGINT; the process's exit code."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(plugin, "0.0.0.0", port, stop)
        except OSError as e:
            logger.error(f"could not listen on 0.0.0.0:{port}: {e}")
            return 1
        return 0

    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(main())
        # Handlers abandoned at their deadline may still be winding down: give them a moment.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
        stubborn = sum(1 for task in pending if not task.done())
        if stubborn:
            logger.warning(
                "handlers still running after they were cancelled; exiting without them",
                extra={"handlers": stubborn},
            )
            sys.stdout.flush()
            os._exit(code)
        return code
    finally:
        loop.close()


class BackgroundServer:
    """A plugin served from a thread (``Plugin.start()``), for tests."""

    def __init__(self, plugin: Plugin, host: str = "127.0.0.1", port: int = 0) -> None:
        self.plugin = plugin
        self.host = host
        self.port: int = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, args=(port,), name="berth-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the plugin server did not start within 10 s")
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _main(self, port: int) -> None:
        asyncio.run(self._serve(port))

    async def _serve(self, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def ready(bound: int) -> None:
            self.port = bound
            self._ready.set()

        try:
            await serve(self.plugin, self.host, port, self._stop, ready)
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Drains like SIGTERM would and waits for the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self.plugin._close_pool()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
