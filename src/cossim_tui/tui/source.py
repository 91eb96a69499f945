"""What the app is handed: a source of run events and a way to send commands back.

The app never starts processes itself. ``launcher.Run`` is the real source; tests hand the app
a fake one fed from a queue; ``trace.RecordingSource`` wraps a run to record it (``--record``)
and ``trace.TraceSource`` replays a recorded trace (``cossim-tui replay``). Keeping this a
structural ``Protocol`` means none of them has to inherit from anything here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from cossim_tui import protocol
from cossim_tui.launcher import ChannelProblem, OutputReceived, ScriptExited

RunEvent = protocol.Message | OutputReceived | ChannelProblem | ScriptExited
"""What ``EventSource.events()`` yields: from the agent ``Hello``, ``TorchHooked``, ``StepCaptured``
and ``ScriptEnded``; from the launcher ``OutputReceived``, ``ChannelProblem`` and, last,
``ScriptExited``. Typed as any ``protocol.Message`` so that ``launcher.Run`` (whose ``events``
says that) fits; the app shows any other message kind as a channel problem."""

Command = protocol.Resume | protocol.Pause | protocol.Mute | protocol.SetBreak
"""Everything the app sends back."""


class EventSource(Protocol):
    """One run of the user's script, as the app sees it."""

    @property
    def target_name(self) -> str:
        """What the user asked to run (``train.py``, ``-m pkg.train``), for the status bar."""
        ...

    def events(self) -> Iterator[RunEvent]:
        """Every event of the run, in order; blocks between events.

        Ends right after yielding ``ScriptExited``, and must end soon after ``terminate()``:
        the app reads it on a worker thread, and quitting waits for that thread.
        """
        ...

    def send(self, message: Command) -> None:
        """A command to the script; dropped quietly when the script has already gone."""
        ...

    def terminate(self) -> None:
        """End the script now; returns within about a second."""
        ...
