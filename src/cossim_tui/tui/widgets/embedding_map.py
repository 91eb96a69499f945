"""The recent vectors of both sides at the call site, on their first two principal components.

The agent projects them (``Projection``); this only draws the points, coloured by side. The
axes never zoom in below ±1 (the spread of a healthy cloud, in the agent's √d units), so a
collapse stays one dot in the middle instead of being blown up into a cloud of rounding
errors, and a healthy run fills the square.
"""

from __future__ import annotations

from textual.content import Content
from textual_plotext import PlotextPlot

from cossim_tui import protocol
from cossim_tui.tui.format import fmt_float, fmt_int
from cossim_tui.tui.widgets.history_plot import SIDE_COLOURS, SIDE_STYLES, theme_rgb

MIN_EXTENT = 1.0
"""Half-width of the axes at least: about one healthy spread."""


class EmbeddingMap(PlotextPlot):
    """``show(projection, step)``: the map the agent made at or before the step on screen."""

    DEFAULT_CSS = """
    EmbeddingMap {
        min-height: 8;
    }
    """

    def show(self, projection: protocol.Projection | None, step: protocol.StepCaptured | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_color()
        if step is None or projection is None:
            where = f" at {step.site.label}" if step is not None else ""
            self.border_title = f"embedding map{where}: no map yet"
            self.border_subtitle = "the agent makes one every few steps and at every pause"
            self.refresh()
            return
        limit = max(projection.extent * 1.05, MIN_EXTENT)
        legend: list[str | tuple[str, str]] = []
        for side in (0, 1):
            xs = [x for x, s in zip(projection.x, projection.side) if s == side]
            ys = [y for y, s in zip(projection.y, projection.side) if s == side]
            if xs:
                plt.scatter(xs, ys, marker="braille", color=theme_rgb(self, SIDE_COLOURS[side], "blue"))
                legend += [("●", SIDE_STYLES[side]), f" x{side + 1}  "]
        plt.xlim(-limit, limit)
        plt.ylim(-limit, limit)
        age = "" if projection.step == step.step else f" (map of step {projection.step})"
        self.border_title = (
            f"embedding map at {step.site.label} · PCA of {fmt_int(len(projection.x))} vectors "
            f"of steps {projection.first_step}–{projection.step}{age}"
        )
        self.border_subtitle = Content.assemble(
            *legend,
            f"· spread {fmt_float(projection.spread, 3)} (healthy ≈ 1, collapse < 0.1) · axes hold "
            f"{fmt_float(100 * projection.explained[0], 2)}% + {fmt_float(100 * projection.explained[1], 2)}% of it"
        )
        self.refresh()
