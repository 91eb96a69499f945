"""The training loss of every step so far, as a sparkline next to the similarity history.

Read side by side, the two answer "is the loss going anywhere while the similarity sits at
1?": a loss that falls while the pair is identical is learning from a broken signal; a flat
loss next to a flat similarity is a loop that learns nothing.
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
from cossim_tui.tui.format import fmt_float

MAX_HISTORY = 2000


class LossHistory(Horizontal):
    """``loss ▇▅▃▂▁  0.6904``; ``loss —`` until the script has called ``backward()``."""

    DEFAULT_CSS = """
    LossHistory {
        height: 1;
        width: 36;
    }
    """

    def __init__(self, *, max_history: int = MAX_HISTORY, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values: deque[float] = deque(maxlen=max_history)
        """The finite losses the agent reported with the steps (the last one passed to ``backward()``)."""
        self.last: float | None = None
        """The latest loss, finite or not."""

    def compose(self) -> ComposeResult:
        yield Static(Content.styled("loss ", palette.LABEL), id="loss-label")
        yield Sparkline([], id="loss-sparkline")
        yield Static(Content.styled("—", palette.LABEL), id="loss-now")

    def restart(self, losses: Iterable[float]) -> None:
        """Forget every loss and record these instead (another rank of a job is shown)."""
        self.values.clear()
        self.last = None
        self.query_one("#loss-sparkline", Sparkline).data = []
        self.query_one("#loss-now", Static).update(Content.styled("—", palette.LABEL))
        self.add(losses)

    def add(self, losses: Iterable[float]) -> None:
        """Record the loss of newly arrived steps (those that know one)."""
        arrived = False
        for loss in losses:
            arrived = True
            self.last = loss
            # A NaN would flatten the whole sparkline; it is shown as the latest value instead.
            if math.isfinite(loss):
                self.values.append(loss)
        if not arrived or self.last is None:
            return
        # A single value would be drawn as one full-height bar across the whole width.
        self.query_one("#loss-sparkline", Sparkline).data = list(self.values) if len(self.values) > 1 else []
        style = palette.EMPHASIS if math.isfinite(self.last) else palette.ALARM
        self.query_one("#loss-now", Static).update(Content.styled(fmt_float(self.last), style))
