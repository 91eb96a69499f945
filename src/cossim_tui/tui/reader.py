"""Turns the run's blocking event stream into app messages, batching the busy kinds.

It runs on the app's one reader thread and touches nothing but ``post``: widgets belong to
the app's thread. Only the most recently posted message can still grow, so messages reach
the app in exactly the order the events happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.message import Message

from cossim_tui import protocol
from cossim_tui.session.events import ChannelProblem, OutputReceived, RunEvent, ScriptExited
from cossim_tui.tui.messages import (
    Batch,
    BreakConditionChanged,
    ChannelFailed,
    OutputArrived,
    RunEnded,
    RunStarted,
    ScriptFinished,
    StepsReceived,
    TorchReady,
)

STREAM_ENDED_EARLY = "the run's events stopped before it reported how the script ended"

_BATCHED: dict[type, tuple[type[Batch], Callable[[Any], object]]] = {
    protocol.StepCaptured: (StepsReceived, lambda step: step),
    OutputReceived: (OutputArrived, lambda output: output.text),
}
"""The busy kinds of event, and what of each a batch carries."""
_MESSAGES: dict[type, Callable[[Any], Message]] = {
    ScriptExited: RunEnded,
    protocol.Hello: RunStarted,
    protocol.TorchHooked: TorchReady,
    protocol.ScriptEnded: ScriptFinished,
    protocol.BreakChanged: BreakConditionChanged,
    ChannelProblem: ChannelFailed,
}
"""The app's message for each other kind of event."""


class EventForwarder:
    """Feed it every event of a run, then call ``finish``."""

    def __init__(self, post: Callable[[Message], object]) -> None:
        self._post = post
        self._open: Batch | None = None
        self.saw_exit = False

    def forward(self, event: RunEvent) -> None:
        batched = _BATCHED.get(type(event))
        if batched is not None:
            kind, item = batched
            self._add(kind, item(event))
            return
        if isinstance(event, ScriptExited):
            self.saw_exit = True
        message = _MESSAGES.get(type(event))
        if message is None:
            self._send(ChannelFailed(ChannelProblem(f"unexpected event from the run: {type(event).__name__}")))
        else:
            self._send(message(event))

    def finish(self) -> None:
        """The stream ended; make sure the app hears that the run is over."""
        if not self.saw_exit:
            self._send(RunEnded(ScriptExited("error", None, None, STREAM_ENDED_EARLY)))

    def _add(self, kind: type[Batch], item: object) -> None:
        if isinstance(self._open, kind) and self._open.add(item):
            return
        self._send(kind(item))

    def _send(self, message: Message) -> None:
        self._open = message if isinstance(message, Batch) else None
        self._post(message)
