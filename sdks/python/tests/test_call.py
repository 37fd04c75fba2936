"""Context.call: through the gateway with the token, the request id and the remaining deadline."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import call


class FakeGateway:
    def __init__(self, status: int = 200, answer: object = None, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.answer = answer
        self.seen: list[dict] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                gateway.seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                time.sleep(gateway.delay)
                data = json.dumps(gateway.answer).encode()
                self.send_response(gateway.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway(monkeypatch):
    made = []

    def make(status=200, answer=None, delay=0.0):
        g = FakeGateway(status, answer, delay)
        made.append(g)
        monkeypatch.setenv("BERTH_GATEWAY_URL", g.url + "/")
        monkeypatch.setenv("BERTH_PLUGIN_TOKEN", "tok-123")
        # The gateway is reached directly even when a proxy is configured.
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        return g

    yield make
    for g in made:
        g.close()


@pytest.mark.parametrize("capability", ["relay", "relay-async"])
def test_call_goes_through_the_gateway_with_token_id_and_deadline(port, gateway, capability):
    g = gateway(200, {"message": "Hello, relay!"})
    r = call(
        port,
        "POST",
        f"/v1/invoke/{capability}",
        {"plugin": "hello", "capability": "greet", "input": {"name": "relay"}},
        {"Berth-Request-Id": "call-1", "Berth-Deadline-Ms": "3000"},
    )
    assert (r.status, r.json()) == (200, {"message": "Hello, relay!"})
    seen = g.seen[-1]
    assert seen["path"] == "/v1/plugins/hello/invoke/greet"
    assert seen["body"] == {"name": "relay"}
    assert seen["headers"]["Authorization"] == "Bearer tok-123"
    assert seen["headers"]["Berth-Request-Id"] == "call-1"
    assert 0 < int(seen["headers"]["Berth-Deadline-Ms"]) <= 3000
    assert seen["headers"]["Content-Type"] == "application/json"


def test_call_without_a_deadline_sends_none(port, gateway):
    g = gateway(200, 1)
    assert call(port, "POST", "/v1/invoke/relay", {"plugin": "p", "capability": "c"}).json() == 1
    assert "Berth-Deadline-Ms" not in g.seen[-1]["headers"]
    assert "Berth-Request-Id" not in g.seen[-1]["headers"]


def test_callee_error_is_plugin_call_failed(port, gateway):
    gateway(422, {"error": {"code": "division_by_zero", "message": "division by zero"}})
    r = call(port, "POST", "/v1/invoke/relay", {"plugin": "calc", "capability": "divide"})
    assert (r.status, r.code) == (502, "plugin_call_failed")
    assert "division_by_zero" in r.json()["error"]["message"]


def test_call_without_gateway_is_503_gateway_unavailable(port, monkeypatch):
    monkeypatch.delenv("BERTH_GATEWAY_URL", raising=False)
    r = call(port, "POST", "/v1/invoke/relay", {"plugin": "hello", "capability": "greet"})
    assert (r.status, r.code) == (503, "gateway_unavailable")
    assert "BERTH_GATEWAY_URL" in r.json()["error"]["message"]


def test_unreachable_gateway_is_502(port, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("BERTH_GATEWAY_URL", f"http://127.0.0.1:{dead}")
    r = call(port, "POST", "/v1/invoke/relay", {"plugin": "hello", "capability": "greet"})
    assert (r.status, r.code) == (502, "gateway_unreachable")


@pytest.mark.parametrize("capability", ["relay", "relay-async"])
def test_call_that_outlives_the_deadline_is_504(port, gateway, capability):
    gateway(200, {"late": True}, delay=1.0)
    started = time.monotonic()
    r = call(port, "POST", f"/v1/invoke/{capability}", {"plugin": "p", "capability": "c"}, {"Berth-Deadline-Ms": "200"})
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert time.monotonic() - started < 0.9


def test_call_async_runs_on_the_sdks_bounded_pool(monkeypatch):
    # Not asyncio's default executor (min(32, cpus + 4) threads, not sized by the pids limit).
    import asyncio

    from berth_plugin import Context, context
    from berth_plugin.plugin import worker_threads

    monkeypatch.setenv("BERTH_MAX_CONCURRENCY", "3")
    monkeypatch.setattr(context, "_call_executor", None)
    monkeypatch.setattr(Context, "call", lambda self, p, c, i: (threading.current_thread().name, p, c, i))
    name, *rest = asyncio.run(Context(request_id="t-1").call_async("other", "cap", {"a": 1}))
    assert name.startswith("berth-call") and rest == ["other", "cap", {"a": 1}]
    pool = context._call_executor
    assert pool is not None and pool._max_workers == worker_threads() == 3
    pool.shutdown(wait=True)
