"""The inspector: shows each intercepted cosine-similarity call and sends the user's commands.

The app is handed its ``EventSource`` (the real ``launcher.Run``, or a fake in tests) and
reads it on one worker thread into ``reader.Arrivals``; the run's state lives in
``model.RunView``, what each event does in ``arrivals.RunEvents``, what the keys do in
``keys.KeyActions`` and a job's ranks in ``rank_actions.RankActions``. Handlers record every step
and redraw only the newest, and while the script runs freely at most five
times a second, so thousands of calls a second cost a bounded number of frames and leave the
CPU to the script. A step the script stops at is drawn at once. Commands go back through
``source.send``; what a key may do depends on where the run stands (``check_action``).

Which step is on screen is decided in one place, ``viewing``: ``None`` follows the live run,
a step number shows that earlier step (kept in the model's ``steps``) on every panel until ``l``, or a
stepping key, returns to the live step. Every finding is also tallied as it arrives, so the
findings summary (``f``) covers the whole run, not only the steps still kept.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen

from cossim_tui import protocol
from cossim_tui.session.events import Command, EventSource
from cossim_tui.tui.arrivals import RunEvents
from cossim_tui.tui.format import fmt_int
from cossim_tui.tui.highlight import Highlight
from cossim_tui.tui.keys import KeyActions
from cossim_tui.tui.messages import EventsArrived
from cossim_tui.tui.model import (
    MAX_STEPS_KEPT,
    Phase,
    RunView,
)
from cossim_tui.tui.rank_actions import RankActions
from cossim_tui.tui.ranks import JobView
from cossim_tui.tui.reader import Arrivals
from cossim_tui.tui.widgets.embedding_map import EmbeddingMap
from cossim_tui.tui.widgets.essential_keys import EssentialKeys
from cossim_tui.tui.widgets.findings_panel import FindingsPanel, MutedKey
from cossim_tui.tui.widgets.fitting_footer import FittingFooter
from cossim_tui.tui.widgets.history import SimilarityHistory
from cossim_tui.tui.widgets.history_plot import HistoryPlot
from cossim_tui.tui.widgets.loss_history import LossHistory
from cossim_tui.tui.widgets.output_log import OutputPane
from cossim_tui.tui.widgets.rank_bar import RankBar
from cossim_tui.tui.widgets.relation_panel import RelationPanel
from cossim_tui.tui.widgets.source_panel import SourcePanel
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel
from cossim_tui.tui.widgets.training_bar import TrainingBar
from cossim_tui.tui.widgets.value_strips import ValueStrips

NARROW_BELOW = 100
"""Below this many columns the two tensors stand side by side with the relation under them
(``-narrow``): three panels across 80 columns would leave each too narrow for a norm."""

LOW_BELOW = 30
"""Below this many rows (``-low``) the value strips give their row to the call's source, and
the first values (of the tensors and of the similarity) theirs."""

TALL_FROM = 40
"""From this many rows (``-tall``) the tensors' storage lines (ptr, strides) are shown too;
below, ``d`` (details) shows them in place of the source, findings and output."""

KEYS_SETTLE = 0.15
"""Seconds a stepping key waits before the footer shows the keys of a running script."""


class InspectorScreen(Screen[None]):
    """The inspector's own screen, so that it can say which widget has the focus first."""

    AUTO_FOCUS = "#finding-list"
    """The findings, as the help says (↑ ↓ choose a finding). The output pane, focused first
    before, lies past the end of a screen under 30 rows, and focusing it scrolled the panels
    (and, before the top line was docked, the top line) out of view."""


class InspectorApp(RunEvents, RankActions, KeyActions, App[None]):
    """``InspectorApp(source, break_on="error")``: inspect one run of the user's script."""

    CSS_PATH = "app.tcss"
    TITLE = "cossim-tui"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide"), (140, "-widest")]
    VERTICAL_BREAKPOINTS = [(0, "-low"), (LOW_BELOW, "-short"), (TALL_FROM, "-tall")]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "step", "Step"),
        Binding("space", "step", "Step", show=False),
        Binding("c", "continue_to_finding", "Continue"),
        Binding("r", "run_freely", "Run"),
        Binding("p", "pause", "Pause"),
        Binding("m", "mute", "Mute"),
        Binding("f", "findings_summary", "Findings"),
        Binding("l", "live", "Live"),
        # Listed in the help and the README: at 100 columns the footer has no room left for them.
        Binding("left_square_bracket", "earlier_step", "Earlier", key_display="[", show=False),
        Binding("right_square_bracket", "later_step", "Later", key_display="]", show=False),
        Binding("left", "earlier_step", "Earlier", show=False),
        Binding("right", "later_step", "Later", show=False),
        Binding("g", "toggle_picture('plot')", "Plot"),
        Binding("e", "toggle_picture('map')", "Map"),
        Binding("s", "save_screenshot", "Screenshot", show=False),
        # The panels' titles say "d: more" where lines are left out: the footer has no room.
        Binding("d", "details", "Details", show=False),
        Binding("b", "break_condition", "Break"),
        Binding("i", "inputs", "Inputs"),
        # A job's ranks (hidden for a single process: ``check_action``).
        Binding("k", "next_rank", "Rank"),
        Binding("a", "across_ranks", "Across"),
        *(Binding(str(digit), f"show_rank({digit})", f"Rank {digit}", show=False) for digit in range(10)),
        # Not in the footer, which cuts what does not fit: ``EssentialKeys`` always shows these two.
        Binding("question_mark", "help", "Help", key_display="?", show=False),
        Binding("q", "quit", "Quit", show=False),
        # pdb's break-in: pause at the next call; pressed again (paused, or still pausing), quit.
        Binding("ctrl+c", "interrupt", "Pause or quit", show=False),
        # A replay runs nothing: the keys above that drive the script are hidden there
        # (``check_action``), and these say why when pressed all the same.
        *(
            Binding(key, f"nothing_runs('{key}')", show=False)
            for key in ("n", "space", "c", "r", "p", "m", "b")
        ),
    ]

    viewing: reactive[int | None] = reactive(None, init=False)
    """The earlier step on screen (history), by number; ``None`` while the screen follows the live run."""

    picture: reactive[Literal["", "plot", "map"]] = reactive("", init=False)
    """What shows in place of the source, findings and output: nothing, the history plot (``g``) or the embedding map (``e``)."""

    details: reactive[bool] = reactive(False, init=False)
    """The tensors' summaries whole (``d``), in place of the source, findings and output, on a
    screen too low for them beside those."""

    def __init__(self, source: EventSource, *, break_on: str = "error", replay: bool = False) -> None:
        super().__init__()
        self.source = source
        self.break_on = break_on
        """What ``continue`` stops at (the agent applies it; shown in the help)."""
        self.replay = replay
        """The source is a recorded trace (``cossim-tui replay``): nothing runs, no command has an effect."""
        self.model = RunView()
        """The run as the screen knows it: steps, findings, phase (``model.RunView``); in a job,
        the shown rank's."""
        self.job = JobView()
        """A job's ranks, each with its own model (``ranks.JobView``); empty for a single process."""
        self._arrivals = Arrivals(lambda: self.post_message(EventsArrived()))
        """What the reader thread has read and the app has not taken yet."""
        self.current: protocol.StepCaptured | None = None
        """The step on screen: ``latest``, or the one ``viewing`` names."""
        self.muted: set[MutedKey] = set()
        self.break_condition = ""
        """The break condition ``c`` also stops at, as last set or confirmed; ``""`` for none."""
        self._terminated = False
        self._drawn_at = float("-inf")
        """When arrived steps were last drawn (``time.monotonic``)."""
        self._follow_pending = False
        """A timer will draw the steps that arrived meanwhile (a free run between two frames)."""
        self._footer_bindings = [binding for binding in self.BINDINGS if isinstance(binding, Binding) and binding.show]
        self._keys_shown: tuple[bool | None, ...] | None = None
        """What each key in the footer could do when the footer was last refreshed."""
        self.screenshot_dir: str | None = None
        """Where ``s`` saves screenshots; ``None`` for the working directory."""

    # -- layout -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return InspectorScreen(id="_default")

    def compose(self) -> ComposeResult:
        # The top line and the keys are docked, so that they stay on screen whatever the
        # height: what does not fit between them scrolls.
        with Horizontal(id="header"):
            yield StatusBar(id="status")
            yield TrainingBar(id="training")
        with Vertical(id="bottom"):
            with Horizontal(id="history-row"):
                yield SimilarityHistory(id="history")
                yield LossHistory(id="loss-history")
            with Horizontal(id="keys"):
                # Compact: as many keys as fit; help and quit have a place of their own on the right.
                yield FittingFooter(compact=True)
                yield EssentialKeys(id="essential-keys")
        yield RankBar(id="ranks")
        with Horizontal(id="pair"):
            yield TensorPanel(0, id="left-tensor")
            yield RelationPanel(id="relation")
            yield TensorPanel(1, id="right-tensor")
        yield ValueStrips(id="strips")
        with Horizontal(id="where"):
            yield SourcePanel(id="source")
            yield FindingsPanel(id="findings")
        yield OutputPane(id="output")
        yield HistoryPlot(id="history-plot")
        yield EmbeddingMap(id="embedding-map")

    def on_mount(self) -> None:
        self.query_one(StatusBar).target = self.source.target_name
        self._arrange_pair(self.size.width)
        self._fit_summaries()
        self.read_events()

    def on_resize(self, event: events.Resize) -> None:
        self._arrange_pair(event.size.width)
        self._fit_summaries()

    def watch_details(self, details: bool) -> None:
        self.set_class(details, "-details")
        self._fit_summaries()

    def _fit_summaries(self) -> None:
        """Leave out the lines a low screen has no rows for, unless ``details`` asks for them:
        under 40 rows the storage, under 30 the first values too (the evidence stays)."""
        height = self.size.height
        hidden: frozenset[str] = frozenset()
        if not self.details and height < TALL_FROM:
            hidden = frozenset({"storage", "preview"} if height < LOW_BELOW else {"storage"})
        for panel in self.query(TensorPanel):
            panel.hidden = hidden
        self.query_one(RelationPanel).brief = "preview" in hidden
        self.query_one(StatusBar).history_lines = 1 if height < LOW_BELOW else 2

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # Below 30 rows the output has no rows of its own: while it has the focus (tab), it
        # takes the pair's place (``-reading-output``), and tab away gives the pair back.
        if event.widget.screen is self.screen:
            self.set_class(isinstance(event.widget, OutputPane), "-reading-output")

    def _arrange_pair(self, width: int) -> None:
        """Tensor, relation, tensor across a wide screen; in a narrow one (``-narrow``) the two
        tensors side by side and the relation, compact, across the width under them."""
        narrow = width < NARROW_BELOW
        pair = self.query_one("#pair")
        relation = self.query_one(RelationPanel)
        right = self.query_one("#right-tensor", TensorPanel)
        if narrow and pair.children[-1] is not relation:
            pair.move_child(relation, after=right)
        elif not narrow and pair.children[1] is not relation:
            pair.move_child(relation, before=right)
        relation.compact = narrow

    # -- the run, as the model holds it ---------------------------------------------------

    def _show_phase(self, change: tuple[Phase, str] | None) -> None:
        if change is not None:
            self._set_phase(*change)

    # -- what is on screen --------------------------------------------------------------

    def show_step(self, step: protocol.StepCaptured) -> None:
        """Put ``step`` on screen (attributes down to every panel)."""
        self.current = step
        left, right = self.query_one("#left-tensor", TensorPanel), self.query_one("#right-tensor", TensorPanel)
        left.summary = step.args[0] if len(step.args) > 0 else None
        right.summary = step.args[1] if len(step.args) > 1 else None
        self.query_one(RelationPanel).step = step
        source = self.query_one(SourcePanel)
        source.site = step.site
        source.context = dict(step.context)
        self.query_one(TrainingBar).context = dict(step.context)
        findings = self.query_one(FindingsPanel)
        findings.muted = frozenset(self.muted)
        findings.findings = list(step.findings)
        pictured = self.model.pictured_for(step)
        self.query_one(ValueStrips).show(
            pictured.args, of_step=pictured.step if pictured is not step else None
        )
        self._show_picture()

    def on_findings_panel_finding_highlighted(self, message: FindingsPanel.FindingHighlighted) -> None:
        highlight = Highlight.of(message.finding)
        # A query, not query_one: while the app shuts down the panels may already be gone.
        for panel in self.query(TensorPanel):
            panel.highlight = highlight
        for relation in self.query(RelationPanel):
            relation.highlight = highlight

    def kept_step(self, number: int) -> protocol.StepCaptured | None:
        """Step ``number`` if it is still kept in memory."""
        return self.model.kept_step(number)

    def validate_viewing(self, viewing: int | None) -> int | None:
        # The live step is not history, and a step no longer kept cannot be shown.
        return self.model.viewable(viewing)

    def watch_viewing(self, viewing: int | None) -> None:
        self.query_one(StatusBar).viewing = viewing
        step = self.model.latest if viewing is None else self.kept_step(viewing)
        if step is not None:
            self.show_step(step)
        self._refresh_keys()

    def view_step(self, number: int) -> bool:
        """Show step ``number`` (history); ``False``, with a notification, when it is no longer kept."""
        if self.kept_step(number) is None:
            oldest = self.model.steps[0].step if self.model.steps else None
            kept = f"steps {oldest} to {self.model.steps[-1].step} are" if oldest is not None else "no step is"
            self.notify(
                f"step {number} is no longer in memory: only the last {fmt_int(MAX_STEPS_KEPT)} steps are kept ({kept})",
                title="cannot show that step",
                severity="warning",
            )
            return False
        self.viewing = number
        return True

    def _set_phase(self, phase: Phase, state: str) -> None:
        status = self.query_one(StatusBar)
        if phase == self.model.phase and state == status.state:
            # A free run reports "running" with every batch of steps; rebuilding the footer's
            # keys each time kept a pressed `p` waiting for hundreds of milliseconds.
            return
        stepping = phase == "running" and self.model.phase == "paused"
        self.model.phase = phase
        status.phase = phase
        status.state = state
        if stepping:
            # A step usually lands within milliseconds and the keys are the same again: grey
            # them out only if the script is still busy after a moment.
            self.set_timer(KEYS_SETTLE, self._refresh_keys)
        else:
            self._refresh_keys()

    def _refresh_keys(self) -> None:
        """Update the footer, if what the keys may do has changed since it was drawn.

        The footer rebuilds all its keys on every refresh: tens of milliseconds, so it happens
        only when the footer would look different."""
        if not self.screen_stack or not self.is_running:
            return  # the app is closing (a timer can still fire): there is no footer any more
        keys = tuple(self.check_action(binding.action, ()) for binding in self._footer_bindings)
        if keys != self._keys_shown:
            self._keys_shown = keys
            self.refresh_bindings()

    # -- pictures ----------------------------------------------------------------------

    def watch_picture(self, picture: str) -> None:
        self.set_class(picture == "plot", "-show-plot")
        self.set_class(picture == "map", "-show-map")
        self._show_picture()

    def _show_picture(self) -> None:
        """Redraw the plot or the map, only while it is on screen: plotting a thousand steps is not free."""
        if self.picture == "plot":
            self.query_one(HistoryPlot).show(self.model.steps, self.current)
        elif self.picture == "map":
            self.query_one(EmbeddingMap).show(self.model.projection_for(self.current), self.current)

    def stop_run(self) -> None:
        """End the script (once); it is bounded to about a second, so it runs right here."""
        if not self._terminated:
            self._terminated = True
            self.source.terminate()

    def on_unmount(self) -> None:
        # Leaving by any other way than ``q`` (ctrl+q, an error) must not leave the script
        # paused forever, and the reader thread only ends once the run does.
        self.stop_run()

    def _send(self, message: Command) -> None:
        self.source.send(message)
