"""Each argument's first vector as a heat strip, under its panel, on one colour scale for both.

Numbers in two columns are slow to compare; colours are not. Both strips share one scale
(the larger magnitude either argument holds, as the agent measured it), so two identical
vectors give two identical strips, a stale copy of the other side looks like it, and an
all-zero vector is a dead, empty strip. Negative values are drawn in the theme's primary
colour, positive ones in its error colour, zero as the panel's background. The values are the
agent's (``TensorSummary.strip``: real elements, evenly sampled); this only colours them.
While the script runs freely the agent gives strips to a few steps a second only; the screen
then shows the latest strips of the call site, and the legend names their step. The legend
says what the strips are (the first vector of each side) and their colour scale, in as many
words as its width takes; the numbers are never cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.app import ComposeResult, RenderResult
from textual.color import Color
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_float

NEAR_ZERO = 1 / 16
"""Below this fraction of the scale a value is drawn as zero."""


def shared_scale(args: Sequence[protocol.TensorSummary]) -> float | None:
    """The largest magnitude among the arguments' values, from the agent's statistics."""
    bounds = [abs(v) for s in args if s.stats is not None for v in (s.stats.min, s.stats.max) if math.isfinite(v)]
    return max(bounds) if bounds else None


class ValueStrip(Widget):
    """One argument's strip: one cell per value when the width allows, else two per cell (``▌``)."""

    DEFAULT_CSS = """
    ValueStrip {
        height: 1;
    }
    """

    summary: reactive[protocol.TensorSummary | None] = reactive(None)
    scale: reactive[float | None] = reactive(None)

    def __init__(self, index: int, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.index = index

    def _colour(self, value: float, zero: Color, negative: Color, positive: Color) -> Color:
        scale = self.scale or 0.0
        level = min(1.0, abs(value) / scale) if scale > 0 else 0.0
        if level < NEAR_ZERO:
            return zero
        # Eight steps of intensity: enough to tell values apart, few enough to see equal ones.
        return zero.blend(negative if value < 0 else positive, math.ceil(level * 8) / 8)

    def render(self) -> RenderResult:
        summary = self.summary
        label = (f"x{self.index + 1} ", palette.LABEL)
        if summary is None or not summary.strip:
            return Content.assemble(label, ("no values", palette.LABEL))
        variables = self.app.theme_variables
        zero = Color.parse(variables.get("panel", "#202020"))
        negative = Color.parse(variables.get("primary", "#0178d4"))
        positive = Color.parse(variables.get("error", "#ba3c5b"))
        values = summary.strip
        width = self.content_size.width - 3
        parts: list[tuple[str, str] | str] = [label]
        if width >= len(values) or width <= 0:
            for value in values:
                if not math.isfinite(value):
                    parts.append(("!", f"{palette.ALARM} on {zero.hex}"))
                    continue
                colour = self._colour(value, zero, negative, positive)
                parts.append(("·" if colour == zero else " ", f"$text-muted on {colour.hex}"))
        else:
            for left, right in zip(values[::2], [*values[1::2], math.nan][: (len(values) + 1) // 2]):
                fg = self._colour(left, zero, negative, positive) if math.isfinite(left) else Color(255, 0, 0)
                bg = self._colour(right, zero, negative, positive) if math.isfinite(right) else zero
                parts.append(("▌", f"{fg.hex} on {bg.hex}"))
        if summary.stats is not None and summary.stats.min == summary.stats.max == 0:
            parts.append((" all zero", palette.ALARM))
        elif len(values) == 1:
            # A similarity over a dim of size 1: a strip of one cell looked empty.
            parts.append((" one value per vector", palette.CAUTION))
        return Content.assemble(*parts)


class StripLegend(Static):
    """``values of the 1st vectors: −1.29 … +1.29``, or shorter where narrow (``values of 1st
    vectors ±1.29`` at 100 columns); ``step 3 · …`` when the strips are an earlier step's."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.scale: float | None = None
        self.of_step: int | None = None

    def show(self, scale: float | None, of_step: int | None) -> None:
        self.scale, self.of_step = scale, of_step
        self.refresh(layout=True)

    def render(self) -> RenderResult:
        scale = self.scale
        if scale is None:
            return Content.styled("first vector · no finite values", palette.LABEL)
        number = fmt_float(scale, 3)
        whose = "values" if self.of_step is None else f"step {self.of_step} ·"
        full = Content.assemble(
            (f"{whose} {'of the ' if self.of_step is None else ''}1st vectors: ", palette.LABEL),
            ("−", "bold $text-primary"),
            number,
            (" … ", palette.LABEL),
            ("+", "bold $text-error"),
            number,
        )
        short = Content.assemble((f"{whose} {'of ' if self.of_step is None else ''}1st vectors ", palette.LABEL), ("±", "bold"), number)
        numbers_only = Content.assemble((f"{whose} ", palette.LABEL), ("±", "bold"), number)
        width = self.content_size.width
        for wording in (full, short):
            if wording.cell_length <= width:
                return wording
        return numbers_only


class ValueStrips(Horizontal):
    """``show(args)``: both arguments' strips, aligned under their panels, and the shared scale."""

    DEFAULT_CSS = """
    ValueStrips {
        height: 1;
    }
    """

    def compose(self) -> ComposeResult:
        yield ValueStrip(0, id="strip-left")
        yield StripLegend(id="strip-scale")
        yield ValueStrip(1, id="strip-right")

    def show(self, args: Sequence[protocol.TensorSummary], *, of_step: int | None = None) -> None:
        """Draw ``args``' strips; ``of_step`` says they are an earlier step's (a free run gives
        only some steps their strips), and the legend then names that step."""
        scale = shared_scale(args)
        for index, strip in enumerate(self.query(ValueStrip)):
            strip.summary = args[index] if len(args) > index else None
            strip.scale = scale
        self.query_one("#strip-scale", StripLegend).show(scale, of_step)
