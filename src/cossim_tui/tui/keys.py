"""What the inspector's keys do: each key's action, and when it may act.

``InspectorApp`` shows the run (``app``); this is the other half of it, mixed into it: the
commands a key sends to the script, browsing back through kept steps, the pictures, the views
over the inspector (findings, break condition, inputs, help), screenshots and quitting. What a
key may do depends on where the run stands (``check_action``): the model's phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from cossim_tui import protocol
from cossim_tui.session.findings import FindingSummary
from cossim_tui.tui.screens.break_condition import BreakConditionScreen
from cossim_tui.tui.screens.findings_summary import FindingsSummaryScreen
from cossim_tui.tui.screens.help import HelpScreen
from cossim_tui.tui.screens.inputs import InputsScreen, has_input_images
from cossim_tui.tui.widgets.findings_panel import FindingsPanel
from cossim_tui.tui.widgets.training_bar import TrainingBar

if TYPE_CHECKING:
    from cossim_tui.tui.app import InspectorApp

    _App = InspectorApp
else:
    _App = object

_STEPPING = ("step", "continue_to_finding", "run_freely")

_DRIVING = (*_STEPPING, "pause", "mute", "break_condition")
"""What a replay cannot do: nothing runs there."""


class KeyActions(_App):
    """The key actions of ``InspectorApp`` (which declares the bindings and the state they read)."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # None keeps a key in the footer, greyed out: the user sees it exists but not now.
        # False hides it: in a replay the keys that drive the script never will do anything.
        if action in _DRIVING and self.replay:
            return False
        if action == "nothing_runs":
            return self.replay
        if action in ("next_rank", "show_rank", "across_ranks"):
            # Only in a job of several ranks: hidden for a single process.
            return len(self.job.models) > 1
        if action == "step":
            # While a step is on its way, n is taken: it will step again once that one lands.
            return True if self.model.phase == "paused" or (self.model.phase == "running" and self.model.stepping) else None
        if action in _STEPPING:
            return True if self.model.phase == "paused" else None
        if action == "pause":
            return True if self.model.phase == "running" else None
        if action == "break_condition":
            return True if self.model.phase not in ("ended", "failed") else None
        if action == "mute":
            return True if self.model.phase not in ("ended", "failed") and self.current is not None else None
        if action == "live":
            # Only in history: while the screen follows the run there is nothing to return to.
            return self.viewing is not None
        if action in ("earlier_step", "later_step"):
            return True if self.model.phase in ("paused", "ended", "failed") else None
        return True

    def action_step(self) -> None:
        if self.model.phase == "paused":
            self._resume("step")
        elif self.model.stepping:
            self.model.steps_queued += 1

    def action_continue_to_finding(self) -> None:
        self._resume("continue")

    def action_run_freely(self) -> None:
        self._resume("run")

    def _resume(self, mode: Literal["step", "continue", "run"]) -> None:
        # The script goes on from the live step, whatever is on screen; so the screen follows it.
        self.viewing = None
        self.model.stepping = mode == "step"
        self._send(protocol.Resume(mode))
        self._set_phase("running", "running")

    def action_pause(self) -> None:
        self.model.steps_queued = 0
        self._send(protocol.Pause())
        self._set_phase("pausing", "pausing…")

    async def action_interrupt(self) -> None:
        """Ctrl-C, as in pdb: a running script pauses at its next call (what ``p`` does); pressed
        again, while that pause is on its way or once the script is paused or over, it quits."""
        if self.model.phase in ("starting", "running") and not self.replay:
            self.action_pause()
            self.notify("pausing at the next call: ctrl+c again or q quits", title="ctrl+c")
        else:
            await self.action_quit()

    def action_nothing_runs(self, key: str) -> None:
        self.notify(
            f"replay: nothing runs, so {key} has nothing to do; [ and ] walk through the recorded steps",
            title="replay",
            severity="warning",
            markup=False,  # the brackets are keys
        )

    def action_mute(self) -> None:
        finding = self.query_one(FindingsPanel).selected_finding
        if finding is None:
            self.notify("no finding selected to mute", severity="warning")
            return
        self._send(protocol.Mute(finding.code, finding.site))
        self.muted.add((finding.code, finding.site))
        self.query_one(FindingsPanel).muted = frozenset(self.muted)
        self.notify(f"muted {finding.code} at {finding.site}")

    def action_live(self) -> None:
        self.viewing = None

    def action_earlier_step(self) -> None:
        self._browse(-1)

    def action_later_step(self) -> None:
        self._browse(+1)

    def _browse(self, offset: int) -> None:
        """One step back or forward through the kept steps; forward from the last one is the live step."""
        if self.current is None:
            return
        number = self.current.step + offset
        if self.model.latest is not None and number >= self.model.latest.step:
            self.viewing = None
        elif self.kept_step(number) is not None:
            self.viewing = number
        elif offset < 0:
            self.notify(f"step {self.current.step} is the oldest step kept in memory", severity="warning")

    def action_toggle_picture(self, picture: Literal["plot", "map"]) -> None:
        self.picture = "" if self.picture == picture else picture
        self.details = False

    def action_details(self) -> None:
        """The tensors' summaries whole, where a low screen leaves lines out; again: back."""
        if not self.details and self.size.height >= 40:
            self.notify("the summaries are whole at this height: d shows more only under 40 rows", title="details")
            return
        self.details = not self.details
        if self.details:
            self.picture = ""

    def action_save_screenshot(self) -> None:
        # The toasts cover the bottom lines, the keys among them: the screenshot is of the
        # screen without them, taken once they are gone from it.
        self.clear_notifications()
        self.call_after_refresh(self._save_screenshot)

    def _save_screenshot(self) -> None:
        try:
            path = self.save_screenshot(path=self.screenshot_dir)
        except OSError as exc:
            self.notify(f"could not save the screenshot: {exc}", severity="error")
            return
        self.notify(f"screenshot saved to {path}", title="screenshot")

    def action_findings_summary(self) -> None:
        self.push_screen(
            FindingsSummaryScreen(self.model.tally.by_site(), frozenset(self.muted)), callback=self._show_first_appearance
        )

    def _show_first_appearance(self, entry: FindingSummary | None) -> None:
        """After enter in the summary: the step where the chosen finding first appeared, with it selected."""
        if entry is None:
            return
        if self.kept_step(entry.first_step) is not None:
            self.query_one(FindingsPanel).select_finding((entry.code, entry.site))
        self.view_step(entry.first_step)  # or says why it cannot

    def action_break_condition(self) -> None:
        self.push_screen(BreakConditionScreen(self.break_condition), callback=self._set_break_condition)

    def _set_break_condition(self, condition: str | None) -> None:
        if condition is None:
            return
        # Shown at once; the agent's answer (``BreakConditionChanged``) confirms it or says why not
        # (the dialog has already refused what does not compile).
        self._send(protocol.SetBreak(condition))
        self._show_break_condition(condition, None)

    def _show_break_condition(self, condition: str, problem: str | None) -> None:
        self.break_condition = condition
        bar = self.query_one(TrainingBar)
        bar.condition = condition
        bar.condition_problem = problem

    def action_inputs(self) -> None:
        step = self.current
        if step is not None and self.viewing is None and not self.replay:
            # Following a free run, the live step may be one the agent made no pictures for:
            # the latest that has them (the screen names its step). A step the user chose to
            # look at, and every step of a replay, shows its own inputs or says it has none.
            step = self.model.pictured_for(step)
        if not has_input_images(step):
            at = f"step {step.step}" if step is not None else "this step"
            self.notify(
                f"no input images at {at}: neither vector was made by a module from an image batch (N, 1 or 3, H, W) still alive, or no pictures were made at that step",
                title="no pictures",
                severity="warning",
            )
            return
        assert step is not None
        self.push_screen(InputsScreen(step))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.break_on, job=len(self.job.models) > 1))

    async def action_quit(self) -> None:
        self.stop_run()
        self.exit()
