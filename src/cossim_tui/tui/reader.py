"""Turns the run's blocking event stream into app messages, batching the busy kinds.

It runs on the app's one reader thread and touches nothing but ``post``: widgets belong to
the app's thread. Only the most recently posted message can still grow, so messages reach
the app in exactly the order the events happened.
"""

from __future__ import annotations

from collections.abc import Callable

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


class EventForwarder:
    """Feed it every event of a run, then call ``finish``."""

    def __init__(self, post: Callable[[Message], object]) -> None:
        self._post = post
        self._open: Batch | None = None
        self.saw_exit = False

    def forward(self, event: RunEvent) -> None:
        if isinstance(event, protocol.StepCaptured):
            self._add(StepsReceived, event)
        elif isinstance(event, OutputReceived):
            self._add(OutputArrived, event.text)
        else:
            self._send(self._message_for(event))

    def finish(self) -> None:
        """The stream ended; make sure the app hears that the run is over."""
        if not self.saw_exit:
            self._send(RunEnded(ScriptExited("error", None, None, STREAM_ENDED_EARLY)))

    def _message_for(self, event: object) -> Message:
        if isinstance(event, ScriptExited):
            self.saw_exit = True
            return RunEnded(event)
        if isinstance(event, protocol.Hello):
            return RunStarted(event)
        if isinstance(event, protocol.TorchHooked):
            return TorchReady(event)
        if isinstance(event, protocol.ScriptEnded):
            return ScriptFinished(event)
        if isinstance(event, protocol.BreakChanged):
            return BreakConditionChanged(event)
        if isinstance(event, ChannelProblem):
            return ChannelFailed(event)
        return ChannelFailed(ChannelProblem(f"unexpected event from the run: {type(event).__name__}"))

    def _add(self, kind: type[Batch], item: object) -> None:
        if isinstance(self._open, kind) and self._open.add(item):
            return
        self._send(kind(item))

    def _send(self, message: Message) -> None:
        self._open = message if isinstance(message, Batch) else None
        self._post(message)
