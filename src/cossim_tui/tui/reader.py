"""Between the app's one reader thread and the app: the events read and not yet taken.

The reader thread blocks on the run's events and ``put``s each here; it touches nothing else,
since widgets belong to the app's thread. When the script runs freely it can make thousands of
calls a second, and one message per call would queue more work than the screen can use. So the
thread posts a wake-up (``EventsArrived``, which carries nothing) only when none is waiting, and
the app ``take``s every event read so far, in order, as one immutable tuple: what it takes no
one changes afterwards. Nothing waits for more events to arrive: a paused step reaches the
screen at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from cossim_tui.session.events import RunEvent, ScriptExited

STREAM_ENDED_EARLY = "the run's events stopped before it reported how the script ended"


class Arrivals:
    """``put`` (the reader thread) each event, then ``finish``; ``take`` (the app) what is waiting."""

    def __init__(self, wake: Callable[[], object]) -> None:
        self._wake = wake
        self._events: deque[RunEvent] = deque()
        self._lock = threading.Lock()
        self._waking = False
        """A wake-up has been posted and the app has not taken the events since."""
        self.saw_exit = False

    def put(self, event: RunEvent) -> None:
        if isinstance(event, ScriptExited):
            self.saw_exit = True
        with self._lock:
            self._events.append(event)
            if self._waking:
                return
            self._waking = True
        self._wake()

    def finish(self) -> None:
        """The stream ended; make sure the app hears that the run is over."""
        if not self.saw_exit:
            self.put(ScriptExited("error", None, None, STREAM_ENDED_EARLY))

    def take(self) -> tuple[RunEvent, ...]:
        """Every event put since the last ``take``, oldest first."""
        with self._lock:
            self._waking = False
            events = tuple(self._events)
            self._events.clear()
        return events
