"""The run so far at one call site, as a plot: the similarity per step and the norms of both sides.

A similarity pinned at 1 from the first step (a logic error), one creeping up to 1 (collapse)
and norms that shrink to 0 or explode read at a glance here. The band is the min, mean and
max of each step's similarities; the norms (mean over rows, right axis) tell which side
changed. The step on screen is a vertical line; steps with findings are marked along the
bottom, in the colour of their worst severity. Only formats what the agent measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.color import Color
from textual.content import Content
from textual_plotext import PlotextPlot

from cossim_tui import protocol
from cossim_tui.protocol import SEVERITY_RANK
from cossim_tui.tui.format import fmt_int

FINDING_MARK = "▲"
SIDE_COLOURS = ("primary", "accent")
"""Theme colours of x1 and x2 in the plot and the map."""
SIDE_STYLES = tuple(f"${name}" for name in SIDE_COLOURS)
SEVERITY_COLOUR = {"error": "error", "warning": "warning", "info": "primary"}
"""Theme colours of the finding marks, by worst severity at the step."""


def theme_rgb(widget: PlotextPlot, variable: str, fallback: str = "white") -> tuple[int, int, int] | str:
    """A colour of the app's theme as the RGB triple plotext wants, so the plot follows the theme."""
    value = widget.app.theme_variables.get(variable)
    if value is None:
        return fallback
    try:
        return Color.parse(value).rgb
    except Exception:  # noqa: BLE001 - an odd theme value still gets a readable plot
        return fallback


MIN_COS_SPAN = 0.1
"""The similarity axis spans at least this much: a similarity stuck at 0.998-1.000 is drawn as the
flat line it is, at the top, not blown up into wild swings across the whole height."""


def cos_axis(low: float, high: float) -> tuple[float, float]:
    """The similarity axis for values from ``low`` to ``high``: at least ``MIN_COS_SPAN`` wide,
    within [-1, 1] where the values allow."""
    if high - low >= MIN_COS_SPAN:
        return low, high
    top = min((low + high) / 2 + MIN_COS_SPAN / 2, 1.0)
    top = max(top, -1.0 + MIN_COS_SPAN, high)
    return min(top - MIN_COS_SPAN, low), top


class HistoryPlot(PlotextPlot):
    """``show(steps, current)``: the kept steps at ``current``'s call site, ``current`` marked."""

    DEFAULT_CSS = """
    HistoryPlot {
        min-height: 8;
    }
    """

    def show(self, steps: Sequence[protocol.StepCaptured], current: protocol.StepCaptured | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_color()
        if current is None:
            self.border_title = "history: waiting for the first call…"
            self.refresh()
            return
        site = current.site.label
        at_site = [s for s in steps if s.site.label == site]
        # A NaN would break the scale; the relation panel reports it instead.
        with_cos = [s for s in at_site if s.cos is not None and all(map(math.isfinite, (s.cos.min, s.cos.mean, s.cos.max)))]
        self.border_title = f"cos per step at {site}"
        self.border_subtitle = Content.assemble(
            f"{fmt_int(len(at_site))} steps · ",
            ("━", "$foreground"),
            " cos mean, ",
            ("┄", "$foreground-muted"),
            " min, max (left) · mean norm ",
            ("━", SIDE_STYLES[0]),
            " x1 ",
            ("━", SIDE_STYLES[1]),
            " x2 (right) · ",
            (FINDING_MARK, "$error"),
            " finding · ",
            ("│", "$warning"),
            f" step {current.step}",
        )
        # Norms first, so that the similarity and the finding marks are drawn over them.
        for side, variable in enumerate(SIDE_COLOURS):
            normed = [s for s in at_site if len(s.args) > side and s.args[side].norm is not None]
            if normed:
                plt.plot(
                    [s.step for s in normed],
                    [s.args[side].norm.mean for s in normed],  # type: ignore[union-attr]
                    yside="right",
                    color=theme_rgb(self, variable, "blue"),
                    marker="braille",
                )
        if with_cos:
            xs = [s.step for s in with_cos]
            muted = theme_rgb(self, "foreground-muted", "gray")
            plt.plot(xs, [s.cos.max for s in with_cos], color=muted, marker="braille")  # type: ignore[union-attr]
            plt.plot(xs, [s.cos.min for s in with_cos], color=muted, marker="braille")  # type: ignore[union-attr]
            plt.plot(xs, [s.cos.mean for s in with_cos], color=theme_rgb(self, "foreground", "white"), marker="hd")  # type: ignore[union-attr]
            bottom, top = cos_axis(min(s.cos.min for s in with_cos), max(s.cos.max for s in with_cos))  # type: ignore[union-attr]
            plt.ylim(bottom, top, yside="left")
            marked = [s for s in at_site if s.findings]
            for severity in ("info", "warning", "error"):
                worst = [
                    s.step for s in marked if max(SEVERITY_RANK[f.severity] for f in s.findings) == SEVERITY_RANK[severity]
                ]
                if worst:
                    plt.scatter(
                        worst,
                        [bottom] * len(worst),
                        marker=FINDING_MARK,
                        color=theme_rgb(self, SEVERITY_COLOUR[severity], "red"),
                    )
        first, last = (at_site[0].step, at_site[-1].step) if at_site else (current.step, current.step)
        ticks = sorted({first + round(i * (last - first) / 4) for i in range(5)})
        plt.xticks(ticks, [str(t) for t in ticks])
        plt.vertical_line(current.step, color=theme_rgb(self, "warning", "yellow"))
        plt.xlabel("step")
        self.refresh()
