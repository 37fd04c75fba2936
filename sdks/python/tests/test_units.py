"""Pieces without a socket: hook actions, registration rules, log formatting, env parsing."""

from __future__ import annotations

import json
import logging

import pytest

from berth_plugin import Continue, Modify, Plugin, PluginError, Veto
from berth_plugin.logs import JsonFormatter, level_from_filter, request_id_var, rfc3339
from berth_plugin.plugin import port_from_env, worker_threads


def test_hook_actions_serialise_as_the_protocol_says():
    assert Continue().to_json() == {"action": "continue"}
    assert Modify({"command": "ls"}).to_json() == {"action": "modify", "event": {"command": "ls"}}
    assert Veto("no").to_json() == {"action": "veto", "reason": "no"}


def test_hook_actions_refuse_invalid_answers():
    with pytest.raises(ValueError):
        Veto("")
    with pytest.raises(ValueError):
        Veto("   ")
    with pytest.raises(TypeError):
        Modify(["not", "an", "object"])  # type: ignore[arg-type]


def test_registration_rules():
    plugin = Plugin("p", "0.1.0")

    @plugin.capability("greet")
    def greet(input):
        return input

    with pytest.raises(ValueError):
        plugin.capability("greet")
    with pytest.raises(ValueError):
        plugin.capability("Bad Name")
    with pytest.raises(ValueError):
        plugin.hook("before_command", mode="sometimes")
    with pytest.raises(TypeError):
        plugin.capability("none")(lambda: None)
    plugin.hook("before_command", mode="filter")(lambda e: None)
    with pytest.raises(ValueError):
        plugin.hook("before_command", mode="filter")
    assert plugin.describe()["hooks"] == [{"name": "before_command", "mode": "filter"}]


def test_plugin_error_rejects_success_status():
    with pytest.raises(ValueError):
        PluginError(200, "ok", "fine")
    e = PluginError(418, "teapot", "short and stout")
    assert e.body() == {"error": {"code": "teapot", "message": "short and stout"}}


@pytest.mark.parametrize(
    "value,level",
    [
        (None, logging.INFO),
        ("", logging.INFO),
        ("debug", logging.DEBUG),
        ("WARN", logging.WARNING),
        ("error", logging.ERROR),
        ("trace", logging.DEBUG),
        ("berth=debug,info", logging.INFO),
        ("berth=debug", logging.DEBUG),
        ("nonsense", logging.INFO),
    ],
)
def test_log_filter_values(value, level):
    assert level_from_filter(value) == level


def test_log_line_fields_and_order():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.status = 504
    token = request_id_var.set("r-9")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert list(line)[:4] == ["timestamp", "level", "message", "request_id"]
    assert (line["level"], line["message"], line["request_id"], line["status"]) == ("WARN", "hello you", "r-9", 504)
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"


def test_port_from_env(monkeypatch):
    monkeypatch.delenv("BERTH_PORT", raising=False)
    assert port_from_env() == 8080
    monkeypatch.setenv("BERTH_PORT", " 9090 ")
    assert port_from_env() == 9090
    for bad in ("0", "65536", "x", "٣"):
        monkeypatch.setenv("BERTH_PORT", bad)
        with pytest.raises(ValueError, match="is not a port number"):
            port_from_env()


def test_worker_threads_follow_the_limits(monkeypatch):
    monkeypatch.delenv("BERTH_MAX_CONCURRENCY", raising=False)
    monkeypatch.delenv("BERTH_PIDS", raising=False)
    assert worker_threads() == 8
    monkeypatch.setenv("BERTH_MAX_CONCURRENCY", "3")
    assert worker_threads() == 3
    monkeypatch.setenv("BERTH_MAX_CONCURRENCY", "1000")
    assert worker_threads() == 32
    monkeypatch.setenv("BERTH_PIDS", "16")
    assert worker_threads() == 8
