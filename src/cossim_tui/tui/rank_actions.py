"""What the inspector does with a job's ranks: route each rank's events to its own model, show
one rank's panels, say where every rank stands (``RankBar``), and switch ranks (``k``, digits).

Mixed into ``InspectorApp``, as ``keys.KeyActions`` is; the ranks' models are
``ranks.JobView``'s. For a single process (events without a rank) nothing here acts, and the
rank keys are hidden.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cossim_tui import protocol
from cossim_tui.session.events import RankLost, ScriptExited
from cossim_tui.tui.model import StepsArrived
from cossim_tui.tui.screens.across_ranks import AcrossRanksScreen, across_rows
from cossim_tui.tui.widgets.history import SimilarityHistory
from cossim_tui.tui.widgets.loss_history import LossHistory
from cossim_tui.tui.widgets.output_log import OutputPane
from cossim_tui.tui.widgets.rank_bar import RankBar
from cossim_tui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from cossim_tui.tui.app import InspectorApp

    _Base = InspectorApp
else:
    _Base = object


class RankActions(_Base):
    def _for_the_shown_rank(self, group: Any) -> Any:
        """What of ``group`` the panels show: all of it for a single process; in a job, the shown
        rank's part, after every other rank's part has gone to its own model."""
        job = self.job
        if isinstance(group, StepsArrived):
            ranks = {step.rank for step in group.steps}
            if ranks == {None}:
                return group
            shown: list[protocol.StepCaptured] = []
            for rank in sorted(r for r in ranks if r is not None):
                steps = tuple(step for step in group.steps if step.rank == rank)
                model = job.model(rank)
                if rank == job.shown and model is self.model:
                    shown.extend(steps)
                else:
                    _apply(model, model.steps_arrived(steps))
                    model.take_undrawn()  # drawn when the rank is shown
            self._show_ranks()
            return StepsArrived(tuple(shown)) if shown else None
        rank = job.rank_of(group)
        if isinstance(group, RankLost):
            job.rank_lost(group)
            self.query_one(OutputPane).write_note(f"rank {group.rank} ended without finishing (killed, or its node was lost)")
            self._show_ranks()
            return None
        if isinstance(group, ScriptExited):
            if job.models:
                job.ended(group)
                self._show_ranks()
            return group
        if rank is None:
            return group
        if isinstance(group, protocol.Hello):
            model = job.hello(group)
            if model is not None and job.shown == group.rank and len(job.models) == 1:
                self.model = model
                self.set_interval(0.5, self._show_ranks)  # "waiting for rank N" comes with time
            elif model is not None and not job.chosen and job.shown is not None and group.rank < job.shown:
                # The lowest rank first, whichever said hello first, until the user chooses.
                self.show_rank(group.rank, chosen=False)
            elif model is not None:
                _apply(model, model.started(group))
            self._show_ranks()
            return group if job.shown == group.rank else None
        if isinstance(group, protocol.ScriptEnded) and rank != job.shown:
            job.model(rank).script_finished(group)
            self._show_ranks()
            return None
        if isinstance(group, (protocol.TorchHooked, protocol.BreakChanged)) and rank != job.shown:
            return None
        return group

    def _show_ranks(self) -> None:
        if not self.is_running:
            return  # the app is closing and its timer can still tick (run_test): the bar may be gone
        bar = self.query_one(RankBar)
        bar.world_size = self.job.world_size
        bar.ranks = tuple(self.job.summary())
        self._refresh_keys()  # (the rank keys appear with the second rank)

    def show_rank(self, rank: int, *, chosen: bool = True) -> None:
        """Show ``rank``'s panels, histories and state: the live step it is at (or paused at);
        ``chosen``: the user chose it (else the lowest rank is still shown first as ranks come)."""
        job = self.job
        if rank not in job.models:
            return
        job.shown, job.chosen = rank, chosen
        self.model = model = job.models[rank]
        model.take_undrawn()
        self.viewing = None
        self.query_one(SimilarityHistory).restart(step.cos.mean if step.cos is not None else None for step in model.steps)
        self.query_one(LossHistory).restart(step.context["loss"] for step in model.steps if "loss" in step.context)
        status = self.query_one(StatusBar)
        status.steps = model.step_count
        status.phase = model.phase
        status.state = job.state(rank) if not model.over or model.exited is None else model.exited.description
        if model.latest is not None:
            self.show_step(model.latest)
        self._show_ranks()
        self._refresh_keys()
        self._show_picture()

    def action_across_ranks(self) -> None:
        """The step on screen beside the same step and call site on every other rank."""
        shown = self.current
        if shown is None or self.job.shown is None:
            return
        site = shown.site.label
        rows = []
        for rank, model in sorted(self.job.models.items()):
            step = shown if rank == self.job.shown else model.kept_step(shown.step)
            if step is not None and step.site.label != site:
                step = next((s for s in model.steps if s.step == shown.step and s.site.label == site), None)
            latest = model.latest
            where = f"at step {latest.step}" if latest is not None else "no step yet"
            if step is None and latest is not None and latest.step > shown.step:
                where = f"step {shown.step} is no longer kept ({where})"
            rows.append((rank, step, where))
        self.push_screen(AcrossRanksScreen(across_rows(shown, self.job.shown, rows)))

    def action_next_rank(self) -> None:
        rank = self.job.step(1)
        if rank is not None:
            self.show_rank(rank)

    def action_show_rank(self, rank: int) -> None:
        if rank in self.job.models:
            self.show_rank(rank)
        elif self.job.models:
            self.notify(f"no rank {rank} in this job (ranks {', '.join(map(str, sorted(self.job.models)))})", timeout=3)


def _apply(model: Any, change: tuple[str, str] | None) -> None:
    """A phase change of a rank not on screen: its model holds it until the rank is shown."""
    if change is not None:
        model.phase = change[0]
