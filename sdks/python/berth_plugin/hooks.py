"""What a filter hook answers: ``Continue()``, ``Modify(event)`` or ``Veto(reason)``."""

from __future__ import annotations

FILTER = "filter"
OBSERVE = "observe"
MODES = (FILTER, OBSERVE)


class HookAction:
    """Base of the three filter answers; ``to_json()`` is the protocol's body."""

    __slots__ = ()

    def to_json(self) -> dict:
        raise NotImplementedError


class Continue(HookAction):
    """Let the event through unchanged: ``{"action":"continue"}``."""

    __slots__ = ()

    def to_json(self) -> dict:
        return {"action": "continue"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Continue)

    def __hash__(self) -> int:
        return hash("continue")

    def __repr__(self) -> str:
        return "Continue()"


class Modify(HookAction):
    """Replace the event: ``{"action":"modify","event":{...}}``.

    The event must be a JSON object and should keep the hook's catalogue fields and types.
    """

    __slots__ = ("event",)

    def __init__(self, event: dict) -> None:
        if not isinstance(event, dict):
            raise TypeError(f"Modify needs the new event as a dict, got {type(event).__name__}")
        self.event = event

    def to_json(self) -> dict:
        return {"action": "modify", "event": self.event}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Modify) and other.event == self.event

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Modify({self.event!r})"


class Veto(HookAction):
    """Stop the event: ``{"action":"veto","reason":"..."}``; the reason is shown to whoever
    caused the event, so write it for them."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("Veto needs a non-empty reason: it is shown to whoever caused the event")
        self.reason = reason

    def to_json(self) -> dict:
        return {"action": "veto", "reason": self.reason}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Veto) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(("veto", self.reason))

    def __repr__(self) -> str:
        return f"Veto({self.reason!r})"
