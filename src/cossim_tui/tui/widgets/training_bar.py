"""The right end of the top line: the break condition and where training is.

``break if cos.mean > 0.999 · epoch 0 · batch 3 · lr 0.01``. The status bar to its left says
where the run stands; this says what ``c`` will also stop at (``b`` sets it) and where in
training the step on screen was taken. The loss is not here: it has its own sparkline in the
history row.
"""

from __future__ import annotations

from textual.app import RenderResult
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_float

HEADER_CONTEXT = ("epoch", "batch", "lr")
"""The training context shown here, in reading order."""


class TrainingBar(Widget):
    """Attributes down: ``context`` of the step on screen, ``condition`` and ``condition_problem``."""

    DEFAULT_CSS = """
    TrainingBar {
        height: 1;
        width: auto;
    }
    """

    context: reactive[dict[str, float]] = reactive(dict, layout=True)
    """The training context of the step on screen (``StepCaptured.context``)."""
    condition: reactive[str] = reactive("", layout=True)
    """The break condition in force; ``""`` for none."""
    condition_problem: reactive[str | None] = reactive(None, layout=True)
    """Why the last condition was refused or turned off; shown until another is set."""

    def get_content_width(self, container: Size, viewport: Size) -> int:
        # Wide enough for everything; ``max-width`` then caps it and ``render`` cuts the condition.
        return self._content(0).cell_length

    def render(self) -> RenderResult:
        return self._content(self.content_size.width)

    def _content(self, width: int) -> Content:
        """The bar's text in ``width`` cells (0: as long as it needs)."""
        context = [
            Content.assemble((f"{key} ", palette.LABEL), fmt_float(self.context[key]))
            for key in HEADER_CONTEXT
            if key in self.context
        ]
        condition: Content | None = None
        if self.condition:
            condition = Content.assemble(("break if ", palette.LABEL), (self.condition, palette.EMPHASIS))
        elif self.condition_problem:
            condition = Content.styled("break condition off", palette.ALARM)
        if condition is not None and width:
            # Where the bar is too short, the condition is cut ("break if cos.mean…"), never
            # the numbers of training after it.
            rest = sum(part.cell_length + 3 for part in context) + 2
            room = width - rest
            if condition.cell_length > room:
                condition = condition[: max(room - 1, 0)] + Content("…") if room > 10 else None
        parts = ([condition] if condition is not None else []) + context
        if not parts:
            return Content("")
        return Content.assemble(" ", Content(" · ").join(parts), " ")
