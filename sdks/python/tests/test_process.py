"""The example plugin as a process: SIGTERM drain, logs, start-up errors, its capabilities."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest
from conftest import SDK_DIR, Conn, build_request, call, free_port, spawn

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def stdout_lines(proc) -> list[dict]:
    out = proc.stdout.read().decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_sigterm_drains_a_request_whose_body_is_still_arriving(example):
    proc, port = example
    idle = Conn(port)
    assert idle.request("GET", "/healthz").status == 200  # now an idle keep-alive connection

    body = json.dumps({"name": "drain"}).encode()
    busy = Conn(port)
    busy.send(
        build_request(
            "POST", "/v1/invoke/greet", None, {"Content-Length": str(len(body)), "Berth-Request-Id": "in-flight"}
        )
    )
    busy.send(body[:5])
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)

    # The idle connection is closed at once; new connections are refused.
    assert idle.closed_by_peer(2.0)
    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    busy.send(body[5:])
    r = busy.read_response()
    assert (r.status, r.json()) == (200, {"message": "Hello, drain!"})
    assert r.header("berth-request-id") == "in-flight"
    assert r.header("connection") == "close"
    assert proc.wait(5) == 0
    lines = stdout_lines(proc)
    messages = [line["message"] for line in lines]
    assert "shutting down: finishing requests in flight" in messages and messages[-1] == "stopped"


def test_sigterm_with_nothing_in_flight_exits_0_promptly(example):
    proc, port = example
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert time.monotonic() - started < 2.0


def test_sigint_also_drains(example):
    proc, _ = example
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0


def test_logs_are_json_lines_with_the_protocol_fields(example):
    proc, port = example
    call(port, "POST", "/v1/invoke/greet", {"name": "Log"}, {"Berth-Request-Id": "log-1"})
    call(port, "POST", "/v1/hooks/after_command", {"event": {"command": "ls"}}, {"Berth-Request-Id": "log-2"})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    lines = stdout_lines(proc)
    assert lines, "no log lines"
    for line in lines:
        assert list(line)[:3] == ["timestamp", "level", "message"], line
        assert TIMESTAMP.match(line["timestamp"]), line
        assert line["level"] in ("DEBUG", "INFO", "WARN", "ERROR")
    listening = next(line for line in lines if line["message"] == "listening")
    assert listening["port"] == port and "request_id" not in listening
    greet = next(line for line in lines if line.get("capability") == "greet")
    assert (greet["request_id"], greet["status"], greet["level"]) == ("log-1", 200, "INFO")
    assert list(greet)[3] == "request_id"
    # a line the handler logs itself carries the request id too
    own = next(line for line in lines if line["message"] == "command finished")
    assert (own["request_id"], own["command"]) == ("log-2", "ls")


def test_berth_log_filters_levels():
    port = free_port()
    proc = spawn(SDK_DIR / "example.py", port, {"BERTH_LOG": "warn"})
    try:
        from conftest import wait_healthy

        wait_healthy(port, proc)
        call(port, "POST", "/v1/invoke/greet", {})
        call(port, "POST", "/v1/invoke/sleep", {"ms": 2000}, {"Berth-Deadline-Ms": "10"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        lines = stdout_lines(proc)
        assert [line["level"] for line in lines] == ["WARN"]
        assert lines[0]["code"] == "deadline_exceeded"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1", "80.5"])
def test_bad_port_exits_with_a_clear_message(value):
    proc = spawn(SDK_DIR / "example.py", 0, {"BERTH_PORT": value})
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert f"BERTH_PORT={value!r} is not a port number" in err.decode()
    assert json.loads(out.decode().splitlines()[0])["level"] == "ERROR"


def test_port_in_use_exits_1():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        proc = spawn(SDK_DIR / "example.py", taken.getsockname()[1])
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "could not listen" in out.decode()


def test_example_capabilities_and_hooks(example):
    _, port = example
    assert call(port, "POST", "/v1/invoke/greet", {"name": "Berth"}).json() == {"message": "Hello, Berth!"}
    assert call(port, "POST", "/v1/invoke/greet", {}).json() == {"message": "Hello, world!"}
    assert call(port, "POST", "/v1/invoke/greet", {"name": 3}).code == "invalid_input"
    assert call(port, "POST", "/v1/invoke/sleep", {"ms": 10}).json() == {"slept_ms": 10}
    r = call(port, "POST", "/v1/invoke/sleep", {"ms": 5000}, {"Berth-Deadline-Ms": "100"})
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert call(port, "POST", "/v1/invoke/sleep", {"ms": -1}).code == "invalid_input"
    hook = "/v1/hooks/before_command"
    assert call(
        port, "POST", hook, {"event": {"command": "echo hello", "args": ["hello"], "cwd": "/workspace"}}
    ).json() == {"action": "continue"}
    assert (
        call(port, "POST", hook, {"event": {"command": "rm -rf /", "args": [], "cwd": "/"}}).json()["action"] == "veto"
    )
    assert call(port, "POST", "/v1/hooks/after_command", {"event": {"command": "ls"}}).status == 204
    d = call(port, "GET", "/v1/describe").json()
    assert (d["name"], d["version"]) == ("py-hello", "0.1.0")


@pytest.fixture
def stuck():
    port = free_port()
    proc = spawn(SDK_DIR / "tests" / "stuck_plugin.py", port)
    try:
        from conftest import wait_healthy

        wait_healthy(port, proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("capability", ["block", "shrug"])
def test_drain_gives_up_after_its_timeout_and_exits_0(stuck, capability):
    proc, port = stuck
    conn = Conn(port)
    conn.send(build_request("POST", f"/v1/invoke/{capability}", b"{}"))
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert time.monotonic() - started < 3.0
    assert any(
        line["message"].startswith("requests still in flight after the drain timeout") for line in stdout_lines(proc)
    )
    conn.close()


@pytest.mark.parametrize("capability", ["block", "shrug"])
def test_handler_that_ignores_its_deadline_gets_504_and_does_not_block_exit(stuck, capability):
    proc, port = stuck
    started = time.monotonic()
    r = call(port, "POST", f"/v1/invoke/{capability}", {}, {"Berth-Deadline-Ms": "100"})
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert time.monotonic() - started < 2.0
    assert call(port, "GET", "/healthz").status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
