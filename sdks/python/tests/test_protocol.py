"""Routing, error precedence, describe, hooks and error bodies over a real socket."""

from __future__ import annotations

import json

import pytest
from conftest import call

BIG = 4 * 1024 * 1024 + 1


def test_healthz_answers_ok(port):
    r = call(port, "GET", "/healthz")
    assert (r.status, r.json()) == (200, {"status": "ok"})
    assert r.header("content-type") == "application/json"


def test_healthz_and_describe_ignore_protocol_headers(port):
    for path in ("/healthz", "/v1/describe"):
        r = call(port, "GET", path, headers={"Berth-Deadline-Ms": "soon"})
        assert r.status == 200, path
        r = call(port, "GET", path, headers=[("Berth-Deadline-Ms", "0"), ("Berth-Deadline-Ms", "1")])
        assert r.status == 200, path


def test_describe_lists_registrations(port):
    r = call(port, "GET", "/v1/describe")
    assert r.status == 200
    d = r.json()
    assert (d["name"], d["version"]) == ("sdk-test", "1.2.3")
    assert [c["name"] for c in d["capabilities"]] == [
        "echo",
        "typed",
        "slow-async",
        "slow-sync",
        "divide",
        "boom",
        "not-json",
        "relay",
        "relay-async",
    ]
    assert d["hooks"] == [
        {"name": "before_command", "mode": "filter"},
        {"name": "after_command", "mode": "observe"},
        {"name": "custom.bad-answer", "mode": "filter"},
    ]


def test_head_healthz_has_no_body(port):
    from conftest import Conn

    conn = Conn(port)
    r = conn.request("HEAD", "/healthz")
    assert r.status == 200 and r.header("content-length") == "15"
    assert conn.request("GET", "/healthz").json() == {"status": "ok"}  # nothing left over on the wire
    conn.close()


@pytest.mark.parametrize(
    "method,path,headers,body,status,code",
    [
        # 1. unknown path wins over everything
        ("POST", "/nope", {"Berth-Deadline-Ms": "soon"}, b"{", 404, "not_found"),
        ("GET", "/v1/invoke/", {}, None, 404, "not_found"),
        ("POST", "/v1/invoke/echo/extra", {}, b"{}", 404, "not_found"),
        ("GET", "/healthz/", {}, None, 404, "not_found"),
        # 2. wrong method, checked before the capability name
        ("POST", "/healthz", {}, b"{}", 405, "method_not_allowed"),
        ("DELETE", "/v1/describe", {}, None, 405, "method_not_allowed"),
        ("GET", "/v1/invoke/echo", {}, None, 405, "method_not_allowed"),
        ("GET", "/v1/invoke/no-such", {"Berth-Deadline-Ms": "soon"}, None, 405, "method_not_allowed"),
        ("PUT", "/v1/hooks/no-such", {}, b"{", 405, "method_not_allowed"),
        # 3. unknown name wins over headers and body
        ("POST", "/v1/invoke/no-such", {"Berth-Deadline-Ms": "soon"}, b"{", 404, "unknown_capability"),
        ("POST", "/v1/hooks/no-such", {"Berth-Deadline-Ms": "0"}, b"{", 404, "unknown_hook"),
        # 4. malformed deadline wins over deadline 0 semantics, size and JSON
        ("POST", "/v1/invoke/echo", {"Berth-Deadline-Ms": "soon"}, b"{", 400, "bad_request"),
        ("POST", "/v1/invoke/echo", {"Berth-Deadline-Ms": "-1"}, b"{}", 400, "bad_request"),
        (
            "POST",
            "/v1/invoke/echo",
            [("Berth-Deadline-Ms", "5"), ("Berth-Deadline-Ms", "5")],
            b"{}",
            400,
            "bad_request",
        ),
        # 5. deadline 0 wins over JSON and size
        ("POST", "/v1/invoke/echo", {"Berth-Deadline-Ms": "0"}, b"{", 504, "deadline_exceeded"),
        ("POST", "/v1/hooks/before_command", {"Berth-Deadline-Ms": " 0 "}, b"not json", 504, "deadline_exceeded"),
        # 7. not JSON
        ("POST", "/v1/invoke/typed", {}, b'{"a":', 400, "malformed_json"),
        ("POST", "/v1/invoke/typed", {}, b"", 400, "malformed_json"),
        ("POST", "/v1/invoke/echo", {}, b"NaN", 400, "malformed_json"),
        ("POST", "/v1/invoke/echo", {}, b'"\xff"', 400, "malformed_json"),
        ("POST", "/v1/hooks/before_command", {}, b"{event", 400, "malformed_json"),
        # 8. does not fit
        ("POST", "/v1/invoke/typed", {}, b"[1,2]", 400, "invalid_input"),
        ("POST", "/v1/hooks/before_command", {}, b"{}", 400, "invalid_input"),
        ("POST", "/v1/hooks/before_command", {}, b'{"event":"ls"}', 400, "invalid_input"),
        ("POST", "/v1/hooks/before_command", {}, b'{"event":null}', 400, "invalid_input"),
        ("POST", "/v1/hooks/after_command", {}, b"[]", 400, "invalid_input"),
    ],
)
def test_error_precedence(port, method, path, headers, body, status, code):
    r = call(port, method, path, body, headers)
    assert (r.status, r.code) == (status, code), r
    assert r.header("content-type") == "application/json"
    assert isinstance(r.json()["error"]["message"], str) and r.json()["error"]["message"]


def test_method_not_allowed_names_allowed_methods(port):
    assert call(port, "GET", "/v1/hooks/before_command").header("allow") == "POST"
    assert call(port, "POST", "/healthz", b"").header("allow") == "GET, HEAD"


def test_deadline_zero_does_not_run_the_handler(port, probe):
    before = probe.runs.get("echo", 0)
    r = call(port, "POST", "/v1/invoke/echo", {"x": 1}, {"Berth-Deadline-Ms": "0"})
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert probe.runs.get("echo", 0) == before


def test_deadline_checks_come_before_the_body_size(port):
    body = b"x" * BIG
    assert call(port, "POST", "/v1/invoke/echo", body, {"Berth-Deadline-Ms": "0"}).status == 504
    assert call(port, "POST", "/v1/invoke/echo", body, {"Berth-Deadline-Ms": "x"}).status == 400
    assert call(port, "POST", "/v1/invoke/nope", body).code == "unknown_capability"


def test_oversize_body_wins_over_malformed_json(port):
    r = call(port, "POST", "/v1/invoke/echo", b"{" * BIG)
    assert (r.status, r.code) == (413, "payload_too_large")


def test_body_at_the_limit_is_accepted(port):
    value = "a" * (4 * 1024 * 1024 - 2)
    r = call(port, "POST", "/v1/invoke/echo", json.dumps(value).encode())
    assert r.status == 200 and r.json() == value


def test_capability_output_is_answered(port):
    r = call(port, "POST", "/v1/invoke/echo", {"a": [1, 2.5, None, "é"]})
    assert (r.status, r.json()) == (200, {"a": [1, 2.5, None, "é"]})
    assert call(port, "POST", "/v1/invoke/typed", {"b": 1, "a": 2}).json() == {"keys": ["a", "b"]}


def test_typed_error_is_answered_with_its_status(port):
    r = call(port, "POST", "/v1/invoke/divide", {"a": 1, "b": 0})
    assert (r.status, r.code) == (422, "division_by_zero")
    assert call(port, "POST", "/v1/invoke/divide", {"a": 1, "b": 4}).json() == {"result": 0.25}


def test_unexpected_exception_is_internal_without_details(port):
    r = call(port, "POST", "/v1/invoke/boom", {})
    assert (r.status, r.code) == (500, "internal")
    assert b"secret detail" not in r.body and b"Traceback" not in r.body


def test_output_that_is_not_json_is_internal(port):
    r = call(port, "POST", "/v1/invoke/not-json", {})
    assert (r.status, r.code) == (500, "internal")


def test_request_id_is_echoed_on_every_answer(port):
    for method, path, body in [
        ("POST", "/v1/invoke/echo", b"{}"),
        ("POST", "/v1/invoke/no-such", b"{}"),
        ("GET", "/nope", None),
        ("POST", "/v1/invoke/echo", b"{"),
        ("GET", "/healthz", None),
    ]:
        r = call(port, method, path, body, {"Berth-Request-Id": "req-42"})
        assert r.header("berth-request-id") == "req-42", (path, r)
    assert call(port, "GET", "/healthz").header("berth-request-id") is None


def test_context_carries_request_headers(port, probe):
    call(
        port,
        "POST",
        "/v1/invoke/echo",
        {},
        {"Berth-Request-Id": "ctx-1", "Berth-Caller": "user:ann", "Berth-Deadline-Ms": "60000"},
    )
    ctx = probe.contexts[-1]
    assert (ctx.request_id, ctx.caller) == ("ctx-1", "user:ann")
    assert 0 < ctx.remaining() <= 60.0


def test_filter_hook_actions(port):
    hook = "/v1/hooks/before_command"
    event = {"command": "echo hello", "args": ["hello"], "cwd": "/workspace"}
    assert call(port, "POST", hook, {"event": event, "extra": 1}).json() == {"action": "continue"}
    veto = call(port, "POST", hook, {"event": {**event, "command": "rm -rf /"}}).json()
    assert veto["action"] == "veto" and veto["reason"]
    modified = call(port, "POST", hook, {"event": {**event, "command": "sudo ls"}}).json()
    assert modified == {"action": "modify", "event": {**event, "command": "ls"}}


def test_observe_hook_answers_204_without_body(port, probe):
    r = call(port, "POST", "/v1/hooks/after_command", {"event": {"command": "ls", "exit_code": 0}})
    assert (r.status, r.body) == (204, b"")
    assert r.header("content-length") is None
    assert probe.observed[-1] == {"command": "ls", "exit_code": 0}


def test_filter_returning_something_else_is_internal(port):
    r = call(port, "POST", "/v1/hooks/custom.bad-answer", {"event": {}})
    assert (r.status, r.code) == (500, "internal")
