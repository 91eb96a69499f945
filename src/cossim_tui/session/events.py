"""The events of one run, defined once: what the agent says, and what the launcher sees.

A run's events are the agent's messages (``protocol``) plus three the launcher makes: the
script's output, a malformed frame, and how the process ended. All are tagged records of the
same codec, so the trace records every one of them as the wire carries the agent's. Both
screens (``headless``, ``tui``) and the trace are written against ``EventSource``: a live run,
a recording around one, or a replay.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cossim_tui.protocol import AgentMessage, Message, Mute, Pause, Resume, SetBreak


class OutputReceived(Message, tag="output"):
    """Text the script wrote to stdout or stderr."""

    text: str


class ChannelProblem(Message, tag="channel-problem"):
    """Something malformed arrived on the channel; the run goes on without it."""

    reason: str


class RankLost(Message, tag="rank-lost"):
    """A rank's channel closed before its script said it had ended: the rank was killed, or
    its node was lost. The other ranks go on, or end as their job does."""

    rank: int | None
    host: str | None = None


ExitStatus = Literal["finished", "error", "stopped", "killed", "not-found", "quit"]


class ScriptExited(Message, tag="exited"):
    """The child is gone. Always the last event of a run.

    ``quit``: the user quit the screen while the script ran, and cossim-tui ended it."""

    status: ExitStatus
    exit_code: int | None
    signal: int | None
    exception: str | None

    @property
    def description(self) -> str:
        if self.status == "quit":
            return "quit by the user"
        if self.status == "killed":
            name = signal_name(self.signal)
            return f"killed by signal {self.signal} ({name})" if name else "killed"
        if self.status == "error":
            return f"failed: {self.exception}" if self.exception else f"failed (exit code {self.exit_code})"
        if self.status == "stopped":
            return "stopped after --max-steps"
        if self.status == "not-found":
            return f"could not start: {self.exception}"
        return f"finished (exit code {self.exit_code})"

    @property
    def failed(self) -> bool:
        """The script itself failed (CONTRACT exit status 3): it raised, exited non-zero, or a
        signal ended it."""
        return self.status in ("error", "killed") or (self.status == "finished" and self.exit_code not in (0, None))


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


RunEvent = AgentMessage | OutputReceived | ChannelProblem | RankLost | ScriptExited
"""Everything a run yields: the agent's messages, then the launcher's output, problems and,
last, ``ScriptExited``."""

Command = Resume | Pause | Mute | SetBreak
"""Everything a screen sends back to the script."""


@dataclass
class Target:
    """What to run: a script path or a module, and the arguments that belong to it."""

    script: str | None = None
    module: str | None = None
    args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.script if self.script is not None else f"-m {self.module}"

    @property
    def argv(self) -> list[str]:
        return [self.script if self.script is not None else str(self.module), *self.args]

    @property
    def command_line(self) -> list[str]:
        """What follows ``python`` to run it: ``SCRIPT ARGS`` or ``-m MODULE ARGS``."""
        return ["-m", str(self.module), *self.args] if self.module is not None else [str(self.script), *self.args]


class EventSource(Protocol):
    """One run of the user's script, as a screen sees it. ``launcher.Run`` is the real one;
    ``RecordingSource`` records one; ``TraceSource`` replays a trace; tests hand a fake."""

    @property
    def target_name(self) -> str:
        """What the user asked to run (``train.py``, ``-m pkg.train``), for the status bar."""
        ...

    def events(self) -> Iterator[RunEvent]:
        """Every event of the run, in order; blocks between events.

        Ends right after yielding ``ScriptExited``, and must end soon after ``terminate()``:
        a screen reads it on a worker thread, and quitting waits for that thread.
        """
        ...

    def send(self, message: Command) -> None:
        """A command to the script; dropped quietly when the script has already gone."""
        ...

    def terminate(self) -> None:
        """End the script now; returns within about a second."""
        ...
