"""The mean similarity of every step so far, as a sparkline, to see a trend at a glance.

A similarity drifting up to 1 over a few hundred steps (collapse) or sitting flat at 1 from
the start (a logic error) look different here long before any single step says so.
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
from cossim_tui.tui.format import fmt_cos, fmt_plural

MAX_HISTORY = 2000
"""The sparkline buckets these into its width; older steps drop off."""


class SimilarityHistory(Horizontal):
    """``cos history ▁▂▅█…  now 0.9993 · min 0.9 · max 1.0000``."""

    DEFAULT_CSS = """
    SimilarityHistory {
        height: 1;
    }
    """

    def __init__(self, *, max_history: int = MAX_HISTORY, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values: deque[float] = deque(maxlen=max_history)
        """The mean similarity of the last steps that produced one (finite values only)."""

    def compose(self) -> ComposeResult:
        yield Static(Content.styled("cos history ", palette.LABEL), id="history-label")
        yield Sparkline([], id="history-sparkline")
        yield Static(Content.styled("no steps yet", palette.LABEL), id="history-summary")

    def add(self, means: Iterable[float]) -> None:
        """Record the mean similarity of newly arrived steps."""
        # A NaN would flatten the whole sparkline; the relation panel reports it instead.
        self.values.extend(m for m in means if math.isfinite(m))
        if not self.values:
            return
        # A single value would be drawn as one full-height bar across the whole width.
        self.query_one("#history-sparkline", Sparkline).data = list(self.values) if len(self.values) > 1 else []
        low, high = min(self.values), max(self.values)
        self.query_one("#history-summary", Static).update(
            Content.assemble(
                ("now ", palette.LABEL),
                (fmt_cos(self.values[-1]), palette.EMPHASIS),
                (" · min ", palette.LABEL),
                fmt_cos(low),
                (" · max ", palette.LABEL),
                fmt_cos(high),
                (" · ", palette.LABEL),
                fmt_plural(len(self.values), "step"),
            )
        )
