"""Write Berth plugins in Python (standard library only, Python 3.11+).

A Berth plugin is a container serving protocol v1 (``docs/protocol.md``) over HTTP/1.1.
This package serves it: register capabilities and hooks with decorators, and the SDK
answers ``/healthz`` and ``/v1/describe``, parses inputs, turns ``Berth-Deadline-Ms`` into
cancellation and ``504 deadline_exceeded``, answers errors as
``{"error":{"code","message"}}``, echoes ``Berth-Request-Id``, logs JSON lines on stdout and,
on SIGTERM, finishes the requests in flight before exiting 0::

    from berth_plugin import Context, Continue, Plugin, Veto

    plugin = Plugin("hello", "0.1.0")

    @plugin.capability("greet")
    def greet(input: dict, ctx: Context) -> dict:
        return {"message": f"Hello, {input.get('name') or 'world'}!"}

    @plugin.hook("before_command", mode="filter")
    def guard(event: dict, ctx: Context):
        if "rm -rf /" in event.get("command", ""):
            return Veto("refusing to wipe the disk")
        return Continue()

    if __name__ == "__main__":
        plugin.run()
"""

from .context import Context
from .errors import (
    BadGateway,
    CallError,
    DeadlineExceeded,
    Internal,
    InvalidInput,
    NotFound,
    PluginError,
    Unavailable,
    Unprocessable,
)
from .hooks import FILTER, OBSERVE, Continue, HookAction, Modify, Veto
from .logs import configure_logging
from .plugin import DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_BODY_BYTES, Plugin

__version__ = "0.1.0"

__all__ = [
    "BadGateway",
    "CallError",
    "Context",
    "Continue",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DeadlineExceeded",
    "FILTER",
    "HookAction",
    "Internal",
    "InvalidInput",
    "Modify",
    "NotFound",
    "OBSERVE",
    "Plugin",
    "PluginError",
    "Unavailable",
    "Unprocessable",
    "Veto",
    "configure_logging",
]
