"""The errors a handler raises, answered as ``{"error":{"code","message"}}``."""

from __future__ import annotations


class PluginError(Exception):
    """An error answer: an HTTP status, a stable ``lower_snake_case`` code and a message.

    Raise it (or one of its subclasses) from a handler; the SDK answers it with its status
    and the protocol's error body. Any other exception is answered ``500 internal``.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        if not 400 <= int(status) <= 599:
            raise ValueError(f"an error status must be 4xx or 5xx, got {status}")
        super().__init__(message)
        self.status = int(status)
        self.code = code
        self.message = message

    def body(self) -> dict:
        """The JSON body this error is answered with."""
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class InvalidInput(PluginError):
    """400 ``invalid_input``: the input parsed but is not what the capability accepts."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_input", message)


class Unprocessable(PluginError):
    """422 with a specific code: the input is well-formed but cannot be processed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(422, code, message)


class NotFound(PluginError):
    """404 with a specific code: something the input names does not exist."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(404, code, message)


class Internal(PluginError):
    """500 ``internal``: a fault in the plugin itself."""

    def __init__(self, message: str) -> None:
        super().__init__(500, "internal", message)


class BadGateway(PluginError):
    """502 with a specific code: something the plugin called answered badly."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(502, code, message)


class Unavailable(PluginError):
    """503 with a specific code: a dependency of the plugin is not there."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(503, code, message)


class DeadlineExceeded(PluginError):
    """504 ``deadline_exceeded``: the caller's ``Berth-Deadline-Ms`` ran out."""

    def __init__(self, budget_ms: int | None = None) -> None:
        if budget_ms is None:
            message = "the request did not finish within its deadline"
        else:
            message = f"the request did not finish within its deadline of {budget_ms} ms"
        super().__init__(504, "deadline_exceeded", message)


class CallError(BadGateway):
    """502 ``plugin_call_failed``: another plugin, called through the gateway, answered an error.

    ``status``/``code`` are this plugin's answer (502 ``plugin_call_failed``);
    ``remote_status``, ``remote_code`` and ``remote_message`` are what the callee (or the
    gateway) answered, for handlers that want to react to a specific failure.
    """

    def __init__(
        self,
        plugin: str,
        capability: str,
        remote_status: int,
        remote_code: str | None,
        remote_message: str,
    ) -> None:
        detail = f"{remote_code}: {remote_message}" if remote_code else remote_message
        super().__init__(
            "plugin_call_failed",
            f"calling {plugin}/{capability} through the gateway failed with {remote_status}: {detail}",
        )
        self.remote_status = remote_status
        self.remote_code = remote_code
        self.remote_message = remote_message
