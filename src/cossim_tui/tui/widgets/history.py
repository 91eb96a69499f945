"""The mean similarity of every step so far, as a sparkline, to see a trend at a glance.

A similarity drifting up to 1 over a few hundred steps (collapse) or sitting flat at 1 from
the start (a logic error) look different here long before any single step says so. The bars
are drawn on the similarity's own scale, −1 to 1, never fitted to the values: fitted, a run
stuck between 0.997 and 1.000 would fill the whole height with jumps that are not there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Sparkline, Static

from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_cos, fmt_int, fmt_plural

MAX_HISTORY = 2000
"""The sparkline buckets these into its width; older steps drop off."""

SCALE = (-1.0, 1.0)
"""The similarity's range: the bottom and the top of the sparkline's bars."""

BARS = "▁▂▃▄▅▆▇█"

MIN_BARS = 6
"""Columns the sparkline keeps however narrow the row: the summary's words give way first."""


class SimilaritySparkline(Sparkline):
    """Textual's ``Sparkline`` (its data, bucketing and colours), drawn on the fixed ``SCALE``
    rather than from its data's min to max."""

    def render(self) -> Content:
        data = list(self.data or [])
        width, height = self.size.width, max(self.size.height, 1)
        low_colour = self.get_component_styles("sparkline--min-color").color
        high_colour = self.get_component_styles("sparkline--max-color").color
        if not data or width <= 0:
            return Content("\n" * (height - 1)) + Content.styled(BARS[0] * max(width, 0), low_colour.hex)
        bottom, top = SCALE
        columns = []
        for column in range(width):
            # Each column sums up its share of the steps as Textual's sparkline does.
            start = column * len(data) // width
            end = max((column + 1) * len(data) // width, start + 1)
            value = self.summary_function(data[start:end])
            columns.append(min(1.0, max(0.0, (value - bottom) / (top - bottom))))
        # A bar rises through the rows, eighths of a row at a time, as Textual's does.
        eighths = len(BARS) * height - 1
        rows = []
        for row in reversed(range(height)):
            cells = []
            for ratio in columns:
                level = int(ratio * eighths) - row * len(BARS)
                bar = " " if level < 0 else BARS[min(level, len(BARS) - 1)]
                cells.append((bar, low_colour.blend(high_colour, ratio).hex))
            rows.append(Content.assemble(*cells))
        return Content("\n").join(rows)


class SimilarityHistory(Horizontal):
    """``cos history ▇▇██…  now 0.9993 · min 0.9970 · max 1.0000``: bars from −1 to 1."""

    DEFAULT_CSS = """
    SimilarityHistory {
        height: 1;
    }
    """

    def __init__(self, *, max_history: int = MAX_HISTORY, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values: deque[float] = deque(maxlen=max_history)
        """The mean similarity of the last steps that produced one (finite values only)."""
        self.without = 0
        """Steps that produced no similarity (the call raised): counted, never drawn."""
        self.latest_without = False
        """Whether the latest step is one of those: then there is no similarity 'now'."""

    def compose(self) -> ComposeResult:
        yield Static(Content.styled("cos history ", palette.LABEL), id="history-label")
        yield SimilaritySparkline([], id="history-sparkline")
        yield Static(Content.styled("no steps yet", palette.LABEL), id="history-summary")

    def restart(self, means: Iterable[float | None]) -> None:
        """Forget every step and record these instead (another rank of a job is shown)."""
        self.values.clear()
        self.without, self.latest_without = 0, False
        self.query_one("#history-sparkline", Sparkline).data = []
        self.query_one("#history-summary", Static).update(Content.styled("no steps yet", palette.LABEL))
        self.add(means)

    def add(self, means: Iterable[float | None]) -> None:
        """Record the mean similarity of newly arrived steps; ``None`` for a step without one."""
        added = False
        for mean in means:
            if mean is None:
                self.without += 1
                self.latest_without = added = True
            elif math.isfinite(mean):  # A NaN would flatten the whole sparkline; the relation panel reports it.
                self.values.append(mean)
                self.latest_without, added = False, True
        if not added:
            return
        if self.values:
            # A single value would be drawn as one full-height bar across the whole width.
            self.query_one("#history-sparkline", Sparkline).data = list(self.values) if len(self.values) > 1 else []
        self._show_summary()

    def on_resize(self) -> None:
        self._show_summary()

    def _show_summary(self) -> None:
        """The fullest summary that fits beside the label and a few bars: a narrow row drops
        words and then whole numbers, never part of one (at 80 columns "· 1 step" was cut)."""
        summary = self.query_one("#history-summary", Static)
        if not self.values:
            if self.without:
                summary.update(Content.styled(f"{fmt_plural(self.without, 'step')}, no similarity yet", palette.CAUTION))
            return
        low, high = min(self.values), max(self.values)
        now = ("none", palette.CAUTION) if self.latest_without else (fmt_cos(self.values[-1]), palette.EMPHASIS)
        sep = (" · ", palette.LABEL)
        count = [sep, fmt_plural(len(self.values), "step")]
        without = [sep, (f"{fmt_int(self.without)} without one", palette.CAUTION)] if self.without else []
        spread = [(" · min ", palette.LABEL), fmt_cos(low), (" · max ", palette.LABEL), fmt_cos(high)]
        span = [sep, fmt_cos(low), (" to ", palette.LABEL), fmt_cos(high)]
        forms = [
            [*spread, *count, *without],
            [*span, *count, *without],
            [*spread, *count],
            [*span, *count],
            span,
            [],
        ]
        label = self.query_one("#history-label", Static)
        room = self.content_size.width - 2 - MIN_BARS  # (the sparkline's margins, and its bars)
        for form in forms:
            for label_text in ("cos history ", "cos "):
                text = Content.assemble(("now ", palette.LABEL), now, *form)
                if not self.content_size.width or len(label_text) + text.cell_length <= room:
                    label.update(Content.styled(label_text, palette.LABEL))
                    summary.update(text)
                    return
        label.update(Content.styled("cos ", palette.LABEL))
        summary.update(text)
