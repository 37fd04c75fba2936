"""Berth-Deadline-Ms: syntax, and cancellation of handlers that run out of time."""

from __future__ import annotations

import time

import pytest
from conftest import call

from berth_plugin import Context, DeadlineExceeded, PluginError
from berth_plugin.plugin import deadline_budget


@pytest.mark.parametrize(
    "values,expected",
    [
        ([], None),
        (["250"], 250),
        (["  250 "], 250),
        (["\t7"], 7),
        (["0"], 0),
        (["007"], 7),
        ([str(2**53)], 2**53),
        ([str(2**53 + 1)], None),
        (["18446744073709551616"], None),
        (["9" * 400], None),
    ],
)
def test_deadline_values(values, expected):
    assert deadline_budget(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["soon"],
        [""],
        [" "],
        ["-1"],
        ["+5"],
        ["1.5"],
        ["1e3"],
        ["0x10"],
        ["5 ms"],
        ["1 2"],
        ["５"],
        ["²"],
        ["5", "5"],
        ["1,2"],
    ],
)
def test_malformed_or_repeated_deadline_is_bad_request(values):
    with pytest.raises(PluginError) as e:
        deadline_budget(values)
    assert (e.value.status, e.value.code) == (400, "bad_request")


def test_huge_deadline_means_no_deadline(port, probe):
    r = call(port, "POST", "/v1/invoke/echo", {"ok": True}, {"Berth-Deadline-Ms": "99999999999999999999999999"})
    assert (r.status, r.json()) == (200, {"ok": True})
    assert probe.contexts[-1].remaining() is None


@pytest.mark.parametrize("capability", ["slow-async", "slow-sync"])
def test_largest_holdable_deadline_still_runs(port, capability):
    r = call(port, "POST", f"/v1/invoke/{capability}", {"seconds": 0.01}, {"Berth-Deadline-Ms": str(2**53)})
    assert (r.status, r.json()) == (200, {"slept": True})


def test_slow_async_handler_is_cancelled_with_504(port, probe):
    probe.async_cancelled.clear()
    started = time.monotonic()
    r = call(port, "POST", "/v1/invoke/slow-async", {"seconds": 5}, {"Berth-Deadline-Ms": "150"})
    elapsed = time.monotonic() - started
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert "150 ms" in r.json()["error"]["message"]
    assert 0.14 <= elapsed < 2.0
    assert probe.async_cancelled.wait(2.0), "the handler's task was not cancelled"


def test_async_handler_within_its_deadline_answers(port):
    r = call(port, "POST", "/v1/invoke/slow-async", {"seconds": 0.01}, {"Berth-Deadline-Ms": "5000"})
    assert (r.status, r.json()) == (200, {"slept": True})


def test_slow_sync_handler_gets_504_and_sees_cancellation(port, probe):
    probe.sync_saw_cancel.clear()
    started = time.monotonic()
    r = call(port, "POST", "/v1/invoke/slow-sync", {"seconds": 5}, {"Berth-Deadline-Ms": "150"})
    assert (r.status, r.code) == (504, "deadline_exceeded")
    assert time.monotonic() - started < 2.0
    assert probe.sync_saw_cancel.wait(2.0), "ctx.wait did not wake up on the deadline"


def test_server_keeps_serving_after_a_cancellation(port):
    call(port, "POST", "/v1/invoke/slow-sync", {"seconds": 5}, {"Berth-Deadline-Ms": "50"})
    assert call(port, "POST", "/v1/invoke/echo", [1]).json() == [1]


def test_context_remaining_and_check():
    ctx = Context(budget=0.05)
    assert 0 < ctx.remaining() <= 0.05 and not ctx.cancelled
    assert ctx.wait(5) is True
    assert ctx.cancelled and ctx.remaining() == 0.0 and ctx.remaining_ms() == 0
    with pytest.raises(DeadlineExceeded):
        ctx.check()
    free = Context()
    assert free.remaining() is None and free.remaining_ms() is None
    assert free.wait(0.01) is False
    free.cancel()
    assert free.cancelled
