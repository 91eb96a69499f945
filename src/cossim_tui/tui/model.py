"""The run as the screen knows it, kept apart from every widget: what arrived, what is kept for
browsing back, and where the run stands.

``RunView`` is plain Python (no textual), so tests drive it directly; the app holds one, hands
it what the reader drained, and draws what it says. ``grouped`` turns the events the reader
drained into immutable groups, in order: consecutive steps as one ``StepsArrived``, consecutive
output as one ``OutputArrived``, every other event as itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from cossim_tui import protocol
from cossim_tui.session.events import OutputReceived, RunEvent, ScriptExited
from cossim_tui.session.findings import FindingTally

MAX_STEPS_KEPT = 1000
"""Steps kept in memory for browsing back; ``step_count`` still counts every one."""

Phase = Literal["starting", "running", "pausing", "paused", "ended", "failed"]
"""Where the run stands, as the status line and the keys see it; ``failed`` is an end that the
user should look into."""


@dataclass(frozen=True)
class StepsArrived:
    """Intercepted calls that arrived one after another, oldest first; only the last can be paused."""

    steps: tuple[protocol.StepCaptured, ...]


@dataclass(frozen=True)
class OutputArrived:
    """The script's output that arrived one chunk after another (lines may be split across chunks)."""

    text: str


Group = StepsArrived | OutputArrived | RunEvent


def grouped(events: Iterable[RunEvent]) -> tuple[Group, ...]:
    """``events`` in order, consecutive steps and consecutive output each made one group."""
    groups: list[Group] = []
    steps: list[protocol.StepCaptured] = []
    text: list[str] = []

    def close() -> None:
        if steps:
            groups.append(StepsArrived(tuple(steps)))
            steps.clear()
        if text:
            groups.append(OutputArrived("".join(text)))
            text.clear()

    for event in events:
        if isinstance(event, protocol.StepCaptured):
            if text:
                close()
            steps.append(event)
        elif isinstance(event, OutputReceived):
            if steps:
                close()
            text.append(event.text)
        else:
            close()
            groups.append(event)
    close()
    return tuple(groups)


class RunView:
    """Every step of the run as it arrives (the last ``kept`` of them kept), the findings tallied,
    the phase and the words for it. Methods that move the run on return the ``(phase, state)``
    to show, or ``None`` when the screen should stay as it is."""

    def __init__(self, kept: int = MAX_STEPS_KEPT) -> None:
        self.steps: deque[protocol.StepCaptured] = deque(maxlen=kept)
        """The most recent steps received, oldest first."""
        self.step_count = 0
        """Every step received, including those no longer kept in ``steps``."""
        self.latest: protocol.StepCaptured | None = None
        """The live step: the last one received."""
        self.tally = FindingTally()
        """Every finding of the run, counted per (code, site) as the steps arrive."""
        self.phase: Phase = "starting"
        self.hello: protocol.Hello | None = None
        self.script_ended: protocol.ScriptEnded | None = None
        self.end_maps: dict[int, protocol.Projection] = {}
        """The run's last map of each call site that ran on after its last one, by the step it is
        of (``ScriptEnded.maps``): shown for that step and those after it, as its own would be."""
        self.exited: ScriptExited | None = None
        self.stepping = False
        """The last command was a step and its paused step has not arrived yet."""
        self.steps_queued = 0
        """Steps asked for (``n``) while one was still on its way: each is sent as the previous lands."""
        self.undrawn: list[protocol.StepCaptured] = []
        """Steps received but not drawn yet (histories, step count, the live step)."""

    @property
    def over(self) -> bool:
        return self.phase in ("ended", "failed")

    def started(self, hello: protocol.Hello) -> tuple[Phase, str] | None:
        self.hello = hello
        return ("running", "running") if self.phase == "starting" else None

    def steps_arrived(self, steps: tuple[protocol.StepCaptured, ...]) -> tuple[Phase, str] | None:
        self.steps.extend(steps)
        self.step_count += len(steps)
        self.tally.add(steps)
        self.latest = steps[-1]
        self.undrawn.extend(steps)
        if self.over:
            return None  # a late step must not make a finished run look alive again
        if steps[-1].paused:
            self.stepping = False
            return "paused", f"paused at step {steps[-1].step}"
        if self.phase != "pausing":
            # After ``p`` the script only stops at its next call; steps already on their way
            # arrive unpaused, and the state keeps saying "pausing…" until the pause lands.
            return "running", "running"
        return None

    def next_queued_step(self) -> bool:
        """Whether a step asked for while the last was on its way is due now (one is used up)."""
        if self.steps_queued and self.phase == "paused":
            self.steps_queued -= 1
            return True
        return False

    def take_undrawn(self) -> list[protocol.StepCaptured]:
        steps, self.undrawn = self.undrawn, []
        return steps

    def script_finished(self, ended: protocol.ScriptEnded) -> None:
        self.script_ended = ended
        self.end_maps.update((projection.step, projection) for projection in ended.maps)

    def run_ended(self, exited: ScriptExited) -> tuple[Phase, str]:
        self.exited = exited
        self.stepping, self.steps_queued = False, 0
        return ("ended" if exited.status in ("finished", "stopped", "quit") else "failed"), exited.description

    def kept_step(self, number: int) -> protocol.StepCaptured | None:
        """Step ``number`` if it is still kept in memory."""
        steps = self.steps
        if not steps:
            return None
        # Steps arrive numbered one after another, so the number is (almost always) the index.
        index = number - steps[0].step
        if 0 <= index < len(steps) and steps[index].step == number:
            return steps[index]
        return next((step for step in steps if step.step == number), None)

    def viewable(self, number: int | None) -> int | None:
        """``number`` as an earlier step to show: ``None`` for the live step, or for a step no
        longer kept."""
        if number is None or (self.latest is not None and number == self.latest.step):
            return None
        return number if self.kept_step(number) is not None else None

    # -- which kept step holds a step's pictures ------------------------------------------

    def pictured_for(self, step: protocol.StepCaptured) -> protocol.StepCaptured:
        """``step``, or, when the agent made no pictures for it (value strips, input images: a
        step of a free run between two that have them), the latest kept one that has them."""
        return self._at_or_before(step, _has_pictures) or step

    def projection_for(self, step: protocol.StepCaptured | None) -> protocol.Projection | None:
        """The map of ``step``'s call site made at that step or, failing that, the latest kept one
        before it (one sent at the run's end counts as its step's)."""
        if step is None:
            return None
        found = self._at_or_before(step, lambda s: s.projection is not None or s.step in self.end_maps)
        if found is None:
            return None
        return found.projection or self.end_maps.get(found.step)

    def _at_or_before(
        self, step: protocol.StepCaptured, holds: Callable[[protocol.StepCaptured], bool]
    ) -> protocol.StepCaptured | None:
        """``step`` if ``holds(step)``, else the latest kept step of its call site before it for
        which it holds: the agent makes maps and pictures for some steps only."""
        if holds(step):
            return step
        site = step.site.label
        return next((s for s in reversed(self.steps) if s.step < step.step and s.site.label == site and holds(s)), None)


def _has_pictures(step: protocol.StepCaptured) -> bool:
    return any(summary.strip or summary.input_image is not None for summary in step.args)
