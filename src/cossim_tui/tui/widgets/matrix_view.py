"""A similarity matrix step at a glance: a heat map of its first rows, positives against
negatives, and the negatives most like a positive, with their row numbers.

Shown under the relation for a step of ``kind: "matrix"``, hidden for a pair. Every figure is
the agent's (``MatrixFigures``); this widget only draws them: one cell per entry, shaded from
-1 (light) to 1 (full block), a positive cell in the success colour, a negative in the text
colour, so a matrix whose negatives look like its positives is a block of even shade.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_cos

SHADES = " ░▒▓█"
"""From -1 to 1, five steps of 0.4 (a blank cell is a similarity of about -1)."""
HARDEST_SHOWN = 3


def shade(value: float) -> str:
    """The block that stands for one similarity, two cells wide; ``?`` for a NaN."""
    if value != value:  # noqa: PLR0124 - NaN
        return "??"
    clipped = min(1.0, max(-1.0, value))
    return SHADES[min(len(SHADES) - 1, int((clipped + 1.0) / 2.0 * len(SHADES)))] * 2


def _spread(name: str, spread: protocol.Spread | None, style: str) -> Content:
    if spread is None:
        return Content.assemble((f"{name} ", palette.LABEL), ("none", palette.LABEL))
    return Content.assemble(
        (f"{name} ", palette.LABEL), (fmt_cos(spread.mean), style),
        (f" ({fmt_cos(spread.min)} … {fmt_cos(spread.max)})", palette.LABEL),
    )


class MatrixView(Static):
    """The matrix figures of ``step``; nothing (and no room taken) for a pairwise step."""

    DEFAULT_CSS = """
    MatrixView { height: auto; }
    """

    step: reactive[protocol.StepCaptured | None] = reactive(None, init=False)

    def watch_step(self, step: protocol.StepCaptured | None) -> None:
        matrix = step.matrix if step is not None else None
        self.display = matrix is not None
        if matrix is None:
            self.update("")
            return
        self.update(Content("\n").join(self.lines(matrix)))

    @staticmethod
    def lines(matrix: protocol.MatrixFigures) -> list[Content]:
        which = "labels" if matrix.by_labels else ("no diagonal" if matrix.self_similarity else "diagonal")
        lines = [
            Content.assemble(("matrix ", palette.LABEL), f"{matrix.rows}×{matrix.columns}", (f" · positives by {which}", palette.LABEL)),
            _spread("positives", matrix.positives, palette.CALM),
            _spread("negatives", matrix.negatives, palette.CAUTION),
        ]
        for r, row in enumerate(matrix.heat):
            marks = matrix.heat_positive[r] if r < len(matrix.heat_positive) else []
            cells = [
                (shade(value), palette.CALM if c < len(marks) and marks[c] else palette.VALUE) for c, value in enumerate(row)
            ]
            lines.append(Content.assemble((f"{r:>3} ", palette.LABEL), *cells))
        if matrix.hardest:
            lines.append(Content.styled("hardest negatives", palette.LABEL))
            for hard in matrix.hardest[:HARDEST_SHOWN]:
                lines.append(
                    Content.assemble((f"  row {hard.row} × col {hard.column} ", palette.LABEL), (fmt_cos(hard.value), palette.CAUTION))
                )
        for side, row, other in matrix.duplicates:
            lines.append(Content.styled(f"side {side + 1}: rows {row} and {other} are equal", palette.ALARM))
        return lines
