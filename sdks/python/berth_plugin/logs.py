"""JSON-lines logs on stdout: ``timestamp``, ``level``, ``message``, ``request_id``, then fields.

The SDK logs through the standard ``logging`` module (logger ``berth_plugin``);
:func:`configure_logging` puts one JSON formatter on the root logger, so a plugin's own
``logging.getLogger(__name__).info("...", extra={"key": value})`` lines come out the same
way, with the ``request_id`` of the request being served.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
import traceback

ENV_LOG = "BERTH_LOG"

#: The ``Berth-Request-Id`` of the request the current task or thread serves.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("berth_request_id", default=None)

logger = logging.getLogger("berth_plugin")

_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}

_FILTER_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
    "none": logging.CRITICAL + 10,
}

# Everything a LogRecord carries by itself; any other attribute came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def level_from_filter(value: str | None) -> int:
    """The level a ``BERTH_LOG`` value asks for; ``info`` when unset or not understood.

    Accepts a bare level (``debug``) and the ``target=level`` lists Rust plugins take
    (``berth=debug,info``): the bare entry wins, else the most verbose one.
    """
    if not value:
        return logging.INFO
    bare = None
    targeted = []
    for part in value.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if "=" in part:
            level = _FILTER_LEVELS.get(part.split("=", 1)[1].strip())
            if level is not None:
                targeted.append(level)
        elif part in _FILTER_LEVELS:
            bare = _FILTER_LEVELS[part]
    if bare is not None:
        return bare
    if targeted:
        return min(targeted)
    return logging.INFO


def rfc3339(epoch_seconds: float) -> str:
    """``2026-11-30T15:04:05.123Z``: UTC with milliseconds."""
    whole = int(epoch_seconds)
    millis = int((epoch_seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _plain(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, in the protocol's field order."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": rfc3339(record.created),
            "level": _LEVEL_NAMES.get(record.levelno, "ERROR" if record.levelno > logging.ERROR else "DEBUG"),
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        line["target"] = record.name
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in line and key != "request_id":
                line[key] = _plain(value)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class _StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is now, one flushed line at a time."""

    def __init__(self) -> None:
        super().__init__()
        self._write_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            with self._write_lock:
                sys.stdout.write(text)
                sys.stdout.flush()
        except Exception:  # a closed stdout must not take the plugin down
            pass


_configured = False


def configure_logging(level: str | None = None) -> None:
    """Sends every log record as a JSON line to stdout, filtered by ``level`` or ``BERTH_LOG``.

    Replaces the root logger's handlers; calling it again only changes the level.
    """
    global _configured
    root = logging.getLogger()
    root.setLevel(level_from_filter(level if level is not None else os.environ.get(ENV_LOG)))
    if _configured:
        return
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)
    _configured = True
