"""Fixtures: a test plugin served on an ephemeral port, and a raw HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parent.parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(SDK_DIR))

from berth_plugin import (  # noqa: E402
    Context,
    Continue,
    Modify,
    Plugin,
    Unprocessable,
    Veto,
)


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.json()["error"]["code"]

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers}, {self.body[:200]!r})"


class Conn:
    """One TCP connection speaking HTTP/1.1 by hand."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_response(self, head_only: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        response = Response(status, headers, b"")
        if status == 100:
            return response
        length = response.header("content-length")
        n = 0 if head_only or length is None else int(length)
        while len(self.buf) < n:
            self._fill()
        response.body, self.buf = self.buf[:n], self.buf[n:]
        return response

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | list | None = None
    ) -> Response:
        self.send(build_request(method, path, body, headers))
        return self.read_response(head_only=method == "HEAD")

    def closed_by_peer(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def build_request(method: str, path: str, body: bytes | None = None, headers: dict | list | None = None) -> bytes:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in pairs}
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        pairs.append(("Content-Length", str(len(body))))
    lines += [f"{k}: {v}" for k, v in pairs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def call(port: int, method: str, path: str, body=None, headers=None) -> Response:
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    conn = Conn(port)
    try:
        return conn.request(method, path, body, headers)
    finally:
        conn.close()


class Probe:
    """What the test plugin's handlers saw."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.async_cancelled = threading.Event()
        self.sync_saw_cancel = threading.Event()
        self.observed: list[dict] = []
        self.contexts: list[Context] = []
        self.lock = threading.Lock()

    def ran(self, name: str) -> None:
        with self.lock:
            self.runs[name] = self.runs.get(name, 0) + 1


def make_plugin(probe: Probe) -> Plugin:
    plugin = Plugin("sdk-test", "1.2.3", drain_timeout=5.0)

    @plugin.capability("echo")
    def echo(input, ctx: Context):
        probe.ran("echo")
        probe.contexts.append(ctx)
        return input

    @plugin.capability("typed")
    async def typed(input: dict, ctx: Context) -> dict:
        probe.ran("typed")
        return {"keys": sorted(input)}

    @plugin.capability("slow-async")
    async def slow_async(input: dict, ctx: Context) -> dict:
        probe.ran("slow-async")
        try:
            await asyncio.sleep(input.get("seconds", 5))
        except asyncio.CancelledError:
            probe.async_cancelled.set()
            raise
        return {"slept": True}

    @plugin.capability("slow-sync")
    def slow_sync(input: dict, ctx: Context) -> dict:
        probe.ran("slow-sync")
        if ctx.wait(input.get("seconds", 5)):
            probe.sync_saw_cancel.set()
            return {"cancelled": True}
        return {"slept": True}

    @plugin.capability("divide")
    def divide(input: dict) -> dict:
        if input["b"] == 0:
            raise Unprocessable("division_by_zero", "division by zero; pass a b other than 0")
        return {"result": input["a"] / input["b"]}

    @plugin.capability("boom")
    async def boom(input, ctx):
        raise RuntimeError("secret detail from inside the plugin")

    @plugin.capability("not-json")
    def not_json(input, ctx):
        return {"value": object()}

    @plugin.capability("relay")
    def relay(input: dict, ctx: Context):
        return ctx.call(input["plugin"], input["capability"], input.get("input", {}))

    @plugin.capability("relay-async")
    async def relay_async(input: dict, ctx: Context):
        return await ctx.call_async(input["plugin"], input["capability"], input.get("input", {}))

    @plugin.hook("before_command", mode="filter")
    async def guard(event: dict, ctx: Context):
        command = event.get("command", "")
        if "rm -rf /" in command:
            return Veto("refusing to wipe the disk")
        if command.startswith("sudo "):
            return Modify({**event, "command": command[len("sudo ") :]})
        return Continue()

    @plugin.hook("after_command", mode="observe")
    def watch(event: dict, ctx: Context):
        probe.observed.append(event)
        return Veto("ignored: observers cannot change anything")

    @plugin.hook("custom.bad-answer", mode="filter")
    def bad_answer(event, ctx):
        return 42

    return plugin


@pytest.fixture(scope="session")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="session")
def server(probe):
    running = make_plugin(probe).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def port(server) -> int:
    return server.port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(script: Path, port: int, env: dict | None = None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    full_env.update({"BERTH_PORT": str(port), "PYTHONPATH": str(SDK_DIR), "PYTHONDONTWRITEBYTECODE": "1"})
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"plugin exited with {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            if call(port, "GET", "/healthz").status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("plugin did not become healthy")


@pytest.fixture
def example():
    """The example plugin (example.py) as a process on a free port."""
    port = free_port()
    proc = spawn(SDK_DIR / "example.py", port)
    try:
        wait_healthy(port, proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
