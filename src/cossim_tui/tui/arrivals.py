"""What the inspector does with the run's events as they arrive: the reader thread, and one
handler per kind of event (steps, output, the script's start and end, the channel's problems).

Mixed into ``InspectorApp``, as ``keys.KeyActions`` is. Steps are recorded in the model as they
come and drawn at once where the script stopped at the last one, and otherwise at most every
``RUNNING_REDRAW`` seconds, so that a free run costs a bounded number of frames however fast
the steps come. A job's events go to their rank's model first (``rank_actions``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual import work
from textual.worker import Worker, WorkerState

from cossim_tui import protocol
from cossim_tui.session.events import ChannelProblem, ScriptExited
from cossim_tui.tui.messages import EventsArrived
from cossim_tui.tui.model import OutputArrived, StepsArrived, grouped
from cossim_tui.tui.screens.findings_summary import FindingsSummaryScreen
from cossim_tui.tui.widgets.history import SimilarityHistory
from cossim_tui.tui.widgets.loss_history import LossHistory
from cossim_tui.tui.widgets.output_log import OutputPane
from cossim_tui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from cossim_tui.tui.app import InspectorApp

    _App = InspectorApp
else:
    _App = object

RUNNING_REDRAW = 0.2
"""Seconds between two frames of a free run: the live step, the histories and the step count."""


class RunEvents(_App):
    # -- the reader thread --------------------------------------------------------------

    @work(thread=True, exit_on_error=False, name="run-reader", description="reads the run's events")
    def read_events(self) -> None:
        """Forward every event of the run to the app, batching steps and output."""
        for event in self.source.events():
            self._arrivals.put(event)
        self._arrivals.finish()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "run-reader" or event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        reason = f"{type(error).__name__}: {error}"
        self.notify(f"lost contact with the run: {reason}", severity="error", timeout=30)
        self.query_one(OutputPane).write_note(f"lost contact with the run: {reason}")
        self._set_phase("failed", f"lost contact with the run: {reason}")

    def on_events_arrived(self, message: EventsArrived) -> None:
        handlers = {
            StepsArrived: self._steps_arrived,
            OutputArrived: self._output_arrived,
            protocol.Hello: self._run_started,
            protocol.TorchHooked: self._torch_hooked,
            protocol.BreakChanged: self._break_condition_changed,
            protocol.ScriptEnded: self._script_finished,
            ChannelProblem: self._channel_problem,
            ScriptExited: self._run_ended,
        }
        for group in grouped(self._arrivals.take()):
            group = self._for_the_shown_rank(group)
            if group is None:
                continue
            handle = handlers.get(type(group))
            if handle is None:
                self._channel_problem(ChannelProblem(f"unexpected event from the run: {type(group).__name__}"))
            else:
                handle(group)  # type: ignore[operator]
        if self.job.models:
            self._show_ranks()  # the shown rank's state too, as its handlers left it

    def _run_started(self, hello: protocol.Hello) -> None:
        self._show_phase(self.model.started(hello))

    def _torch_hooked(self, hooked: protocol.TorchHooked) -> None:
        # Short names (``F.``, ``nn.``): five of them in full took two rows of a small pane.
        names = [
            name.replace("torch.nn.functional.", "F.").replace("torch.nn.", "nn.") for name in hooked.intercepted
        ]
        self.query_one(OutputPane).write_note(f"torch {hooked.version} hooked: {', '.join(names) or 'nothing intercepted'}")

    def _steps_arrived(self, arrived: StepsArrived) -> None:
        self._show_phase(self.model.steps_arrived(arrived.steps))
        if isinstance(self.screen, FindingsSummaryScreen):
            self.screen.groups = self.model.tally.by_site()
        self._follow()
        if self.model.next_queued_step():
            # ``n`` pressed while the previous step was on its way: every press is one step.
            self._resume("step")

    def _follow(self) -> None:
        """Draw the steps that arrived: at once when the script stopped at the last one, and
        otherwise at most every ``RUNNING_REDRAW`` seconds, so that a free run costs a bounded
        number of frames however fast the steps come."""
        now = time.monotonic()
        undrawn = self.model.undrawn
        paused = bool(undrawn) and undrawn[-1].paused
        if paused or now - self._drawn_at >= RUNNING_REDRAW:
            self._drawn_at = now
            self._draw_arrived()
        elif not self._follow_pending:
            self._follow_pending = True
            self.set_timer(RUNNING_REDRAW - (now - self._drawn_at), self._follow_later)

    def _follow_later(self) -> None:
        self._follow_pending = False
        if self.model.undrawn and self.screen_stack and self.is_running:  # (not while the app closes)
            self._follow()

    def _draw_arrived(self) -> None:
        steps = self.model.take_undrawn()
        if not steps:
            return
        self.query_one(SimilarityHistory).add(step.cos.mean if step.cos is not None else None for step in steps)
        self.query_one(LossHistory).add(step.context["loss"] for step in steps if "loss" in step.context)
        self.query_one(StatusBar).steps = self.model.step_count
        if self.viewing is None:
            self.show_step(steps[-1])

    def _output_arrived(self, output: OutputArrived) -> None:
        self.query_one(OutputPane).write_output(output.text)

    def _break_condition_changed(self, changed: protocol.BreakChanged) -> None:
        self._show_break_condition(changed.condition, changed.error)
        if changed.error:
            where = f" at step {changed.step}" if changed.step is not None else ""
            self.notify(changed.error, title=f"break condition{where}", severity="error", timeout=15)
            self.query_one(OutputPane).write_note(f"break condition{where}: {changed.error}")

    def _script_finished(self, ended: protocol.ScriptEnded) -> None:
        self.model.script_finished(ended)
        if ended.maps:
            self._show_picture()

    def _channel_problem(self, problem: ChannelProblem) -> None:
        reason = problem.reason
        self.notify(reason, title="problem on the channel from the script", severity="error", timeout=10)
        self.query_one(OutputPane).write_note(f"channel problem: {reason}")

    def _run_ended(self, exited: ScriptExited) -> None:
        self._show_phase(self.model.run_ended(exited))
