"""Messages the reader thread posts to the app, each named as the run event it reports.

When the script runs freely it can make thousands of calls a second; one message per call
would queue more work than the screen can use. So steps and output travel in batches:
while a batch has been posted but the app has not started on it, the reader adds to it
instead of posting another (see ``reader.EventForwarder``). The app ``take``s a batch once;
after that the reader starts a new one. Nothing waits for a batch to fill: it is posted as
soon as its first event arrives, so a paused step reaches the screen at once.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from textual.message import Message

from cossim_tui import protocol
from cossim_tui.session.events import ChannelProblem, ScriptExited

T = TypeVar("T")


class Batch(Message, Generic[T]):
    """A message the reader may still add to until the app takes it."""

    def __init__(self, first: T) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._items: list[T] = [first]
        self._taken = False

    def add(self, item: T) -> bool:
        """Add ``item`` unless the app has already taken the batch (then post a new one)."""
        with self._lock:
            if self._taken:
                return False
            self._items.append(item)
            return True

    def take(self) -> list[T]:
        """Everything in the batch; from now on the reader leaves it alone."""
        with self._lock:
            self._taken = True
            return self._items


class StepsReceived(Batch[protocol.StepCaptured]):
    """One or more intercepted calls, oldest first; only the last one can be paused."""


class OutputArrived(Batch[str]):
    """Chunks of the script's stdout/stderr, in order; lines may be split across chunks."""


class RunStarted(Message):
    """The agent said hello: the script is about to run."""

    def __init__(self, hello: protocol.Hello) -> None:
        super().__init__()
        self.hello = hello


class TorchReady(Message):
    """The script imported torch and its cosine entry points are intercepted."""

    def __init__(self, hooked: protocol.TorchHooked) -> None:
        super().__init__()
        self.hooked = hooked


class BreakConditionChanged(Message):
    """The agent says which break condition is in force now, and why one was refused or turned off."""

    def __init__(self, changed: protocol.BreakChanged) -> None:
        super().__init__()
        self.changed = changed


class ScriptFinished(Message):
    """The script's code finished, as the agent saw it; ``RunEnded`` follows."""

    def __init__(self, ended: protocol.ScriptEnded) -> None:
        super().__init__()
        self.ended = ended


class ChannelFailed(Message):
    """Something malformed or unexpected arrived from the run; the run goes on."""

    def __init__(self, problem: ChannelProblem) -> None:
        super().__init__()
        self.problem = problem


class RunEnded(Message):
    """The script's process is gone; always the last message of a run."""

    def __init__(self, exited: ScriptExited) -> None:
        super().__init__()
        self.exited = exited
