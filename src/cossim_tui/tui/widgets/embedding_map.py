"""The recent vectors of both sides at the call site, on their first two principal components.

The agent projects them (``Projection``); this only draws the points, coloured by side. When
the batch carried labels, colour says the label instead (whether classes stay apart, or
collapse into each other, is then the picture) and the sides are told apart by their marks.
The axes never zoom in below ±1 (the spread of a healthy cloud, in the agent's √d units), so a
collapse stays one dot in the middle instead of being blown up into a cloud of rounding
errors, and a healthy run fills the square.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from textual.content import Content
from textual_plotext import PlotextPlot

from cossim_tui import protocol
from cossim_tui.tui.format import fmt_float, fmt_int, fmt_percent
from cossim_tui.tui.widgets.history_plot import SIDE_COLOURS, SIDE_STYLES, theme_rgb

MIN_EXTENT = 1.0
"""Half-width of the axes at least: about one healthy spread."""

RGB = tuple[int, int, int]
LABEL_COLOURS: tuple[RGB, ...] = (
    (78, 121, 167),
    (242, 142, 43),
    (225, 87, 89),
    (118, 183, 178),
    (89, 161, 79),
    (237, 201, 72),
    (176, 122, 161),
    (255, 157, 167),
)
"""The first eight colours of Tableau 10: fixed, not the theme's, because a theme has too few
hues that stay apart side by side; these do on dark and light backgrounds alike."""
OTHER_COLOUR: RGB = (128, 128, 128)
"""Labels beyond the eight most frequent, and points without a label."""
SIDE_MARKS = ("●", "+")
"""How x1 and x2 are told apart when colour says the label."""


def label_colours(labels: Sequence[int]) -> dict[int, RGB]:
    """A colour for each of the most frequent labels (up to eight), given in label order, so
    that the same classes keep the same colours from one map to the next."""
    counts = Counter(label for label in labels if label >= 0)
    frequent = sorted(counts, key=lambda label: (-counts[label], label))[: len(LABEL_COLOURS)]
    return dict(zip(sorted(frequent), LABEL_COLOURS))


def _fitting(room: int, *forms: str | Content) -> str | Content:
    """The first of ``forms`` that fits in ``room`` cells (all of them while the width is not
    known yet), or else the last."""
    for form in forms:
        length = form.cell_length if isinstance(form, Content) else Content(form).cell_length
        if room <= 0 or length <= room:
            return form
    return forms[-1]


def _hex(colour: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


class EmbeddingMap(PlotextPlot):
    """``show(projection, step)``: the map the agent made at or before the step on screen."""

    DEFAULT_CSS = """
    EmbeddingMap {
        min-height: 8;
    }
    """

    _shown: tuple[protocol.Projection | None, protocol.StepCaptured | None] | None = None

    def show(self, projection: protocol.Projection | None, step: protocol.StepCaptured | None) -> None:
        self._shown = (projection, step)
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
        labels = projection.label or []
        if any(label >= 0 for label in labels):
            legend = self._draw_by_label(projection, labels)
        else:
            legend = self._draw_by_side(projection)
        plt.xlim(-limit, limit)
        plt.ylim(-limit, limit)
        age = "" if projection.step == step.step else f" (map of step {projection.step})"
        steps = f"steps {projection.first_step}–{projection.step}{age}"
        name = step.site.label.replace("\\", "/").rsplit("/", 1)[-1]
        vectors = f"{fmt_int(len(projection.x))} vectors"
        # The fullest caption that fits the border: at 100 columns the step of the map and the
        # spread were cut. Words go first, then the folder, never a number.
        self.border_title = _fitting(
            self._room(),
            f"embedding map at {step.site.label} · PCA of {vectors} of {steps}",
            f"map at {step.site.label} · {vectors} of {steps}",
            f"map at {name} · {vectors} of {steps}",
            f"map at {name} · {steps}",
            f"map · {steps}",
        )
        spread = f"· spread {fmt_float(projection.spread, 3)}"
        axes = f" · axes hold {fmt_percent(projection.explained[0])} + {fmt_percent(projection.explained[1])} of it"
        self.border_subtitle = _fitting(
            self._room(),
            Content.assemble(*legend, f"{spread} (healthy ≈ 1, collapse < 0.1){axes}"),
            Content.assemble(*legend, f"{spread} (healthy ≈ 1, collapse < 0.1)"),
            Content.assemble(*legend, f"{spread} (healthy ≈ 1)"),
            Content.assemble(*legend, spread),
            Content.assemble(*[part for part in legend if not (isinstance(part, str) and part.startswith("· colour"))], spread),
        )
        self.refresh()

    def _room(self) -> int:
        """Cells a caption has on the border (its corners and the spaces around it)."""
        return self.outer_size.width - 6

    def on_resize(self) -> None:
        if self._shown is not None:
            self.show(*self._shown)

    def _draw_by_side(self, projection: protocol.Projection) -> list[str | tuple[str, str]]:
        """Each side in its theme colour, as fine braille dots; the legend that says so."""
        legend: list[str | tuple[str, str]] = []
        for side in (0, 1):
            xs = [x for x, s in zip(projection.x, projection.side) if s == side]
            ys = [y for y, s in zip(projection.y, projection.side) if s == side]
            if xs:
                self.plt.scatter(xs, ys, marker="braille", color=theme_rgb(self, SIDE_COLOURS[side], "blue"))
                legend += [("●", SIDE_STYLES[side]), f" x{side + 1}  "]
        return legend

    def _draw_by_label(self, projection: protocol.Projection, labels: list[int]) -> list[str | tuple[str, str]]:
        """Each point in its label's colour and its side's mark; the legend that says so.

        A braille cell has one colour for its eight dots, so each point is a whole cell here.
        Points without a label, or with a rare one, are drawn first: a coloured point is never
        hidden under a grey one.
        """
        # A shorter list (an odd trace) leaves the remaining points unlabelled, not undrawn.
        labels = labels[: len(projection.x)] + [-1] * (len(projection.x) - len(labels))
        colours = label_colours(labels)
        groups: dict[tuple[RGB, int], tuple[list[float], list[float]]] = {}
        other = unlabelled = False
        for x, y, side, label in zip(projection.x, projection.y, projection.side, labels):
            if side not in (0, 1):
                continue
            colour = colours.get(label, OTHER_COLOUR)
            other = other or (label >= 0 and label not in colours)
            unlabelled = unlabelled or label < 0
            xs, ys = groups.setdefault((colour, side), ([], []))
            xs.append(x)
            ys.append(y)
        for colour in (OTHER_COLOUR, *colours.values()):
            for side in (0, 1):
                if (colour, side) in groups:
                    self.plt.scatter(*groups[colour, side], marker=SIDE_MARKS[side], color=colour)
        legend: list[str | tuple[str, str]] = []
        for side in sorted({side for _, side in groups}):
            legend += [(SIDE_MARKS[side], "$foreground"), f" x{side + 1}  "]
        legend.append("· colour = label ")
        for label, colour in colours.items():
            legend += [("■", _hex(colour)), f"{label} "]
        rest = [word for word, present in (("other", other), ("unlabelled", unlabelled)) if present]
        if rest:
            legend += [("■", _hex(OTHER_COLOUR)), f"{'/'.join(rest)} "]
        return legend
