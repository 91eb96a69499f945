"""The middle panel: the similarity the call produced and how the two arguments relate.

The mean similarity is drawn large because it is the number the user came for. Under it,
the three questions that explain most similarities stuck at 1 get a plain YES or NO: are
the arguments the same object, do they share storage, are their values equal. When torch
raised instead of returning, the error takes the number's place.

In a narrow terminal the panel lies across the width under the two tensors (``compact``):
the similarity is then a line of text rather than large digits, and the lines are packed
side by side, so that the pair, the relation and the call line all fit in 80x24.
"""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Digits, Static

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import (
    fmt_angle,
    fmt_cos,
    fmt_cos_values,
    fmt_float,
    fmt_plural,
    fmt_shape,
    fmt_yes_no,
)
from cossim_tui.tui.highlight import NO_HIGHLIGHT, Highlight, light_up, mark
from cossim_tui.tui.widgets.matrix_view import MatrixView


def _label(text: str) -> tuple[str, str]:
    return (text, palette.LABEL)


def _answer(answer: bool | None) -> tuple[str, str]:
    """YES/NO with its colour: for these three questions YES is the bug."""
    if answer is None:
        return ("n/a (shapes differ)", palette.LABEL)
    return (fmt_yes_no(answer), palette.ALARM if answer else palette.CALM)


def _squeeze(line: Content) -> Content:
    """A line without the runs of spaces that align its value in a column of its own."""
    squeezed = line
    while "  " in squeezed.plain:
        at = squeezed.plain.index("  ")
        squeezed = squeezed[:at] + squeezed[at + 1 :]
    return squeezed


class RelationPanel(Vertical):
    """Similarity (large), its spread and angle, and the relation between the arguments.

    ``highlight`` lights up what proves the selected finding: a relation line
    (``relation.same_object``), the reduced dim under the border (``relation.dim``) or the
    large similarity (``cos``).
    """

    step: reactive[protocol.StepCaptured | None] = reactive(None, init=False)
    highlight: reactive[Highlight] = reactive(NO_HIGHLIGHT, init=False)
    compact: reactive[bool] = reactive(False, init=False)
    """Across the screen's width, a few lines high: no large digits, lines packed side by side."""
    brief: reactive[bool] = reactive(False, init=False)
    """A low screen: the first similarities give their lines to the call (``d`` shows them)."""

    def compose(self) -> ComposeResult:
        digits = Digits("", id="mean-cos")
        digits.display = False
        yield digits
        yield Static(Content.styled("waiting for the first call…", palette.LABEL), id="relation-text")
        matrix = MatrixView(id="matrix-view")
        matrix.display = False
        yield matrix

    def watch_step(self, step: protocol.StepCaptured | None) -> None:
        digits = self.query_one("#mean-cos", Digits)
        text = self.query_one("#relation-text", Static)
        self.query_one(MatrixView).step = step  # (a matrix step's own figures, under the relation)
        highlight = self.highlight
        if step is None:
            self.border_title = None
            self.border_subtitle = None
            digits.display = False
            text.update(Content.styled("waiting for the first call…", palette.LABEL))
            return
        name = step.label or step.function
        room = self.outer_size.width - 6
        if self.outer_size.width and len(f"step {step.step} · {name}") > room and "cos" in name:
            # "step 23 · cosine_similari…" was cut: the source line names the call in full, and
            # "cos" is what the panel calls the similarity.
            name = "cos"
        self.border_title = Content(f"step {step.step} · {name}")
        relation = step.relation
        if step.error is not None:
            # Its relation has no size to give (0 where the shapes do not broadcast): say what happened.
            subtitle: Content | None = Content.styled("the call raised", palette.ALARM)
        elif relation is not None:
            subtitle = Content(f"dim {relation.dim} · size {relation.dim_size}")
        else:
            subtitle = None
        if self.compact:
            subtitle = None  # (in the text, with the relation: a low screen has no bottom border for it)
        if subtitle is not None and highlight.shows("relation.dim", "relation.dim_size"):
            subtitle = subtitle.stylize(highlight.line_style)
        self.border_subtitle = subtitle
        cos = step.cos
        # Digits can only draw numbers; NaN and errors are spelled out in the text below.
        big = step.error is None and cos is not None and math.isfinite(cos.mean) and not self.compact
        digits.display = big
        if big:
            assert cos is not None
            digits.update(fmt_cos(cos.mean))
        mark(digits, highlight, big and highlight.shows("cos", "cos.mean"))
        width = text.content_size.width or self.content_size.width
        lines = self._lines(step)
        if self.compact:
            lines = self._packed(lines, width)
        text.update(
            Content("\n").join(
                light_up(line, highlight, width) if highlight.shows(*fields) else line for fields, line in lines
            )
        )

    def _packed(
        self, lines: list[tuple[tuple[str, ...], Content]], width: int
    ) -> list[tuple[tuple[str, ...], Content]]:
        """The lines packed side by side, in their order (``compact``).

        A packed line lights up when any of its fields is evidence, so what proves a finding
        still shows; the aligned label columns are squeezed to one space."""
        packed: list[tuple[tuple[str, ...], Content]] = []
        row_fields: tuple[str, ...] = ()
        row: Content | None = None
        for fields, line in lines:
            line = _squeeze(line)
            if row is not None and row.cell_length + 3 + line.cell_length <= width:
                row, row_fields = Content.assemble(row, _label(" · "), line), row_fields + fields
                continue
            if row is not None:
                packed.append((row_fields, row))
            row, row_fields = line, fields
        if row is not None:
            packed.append((row_fields, row))
        return packed

    def watch_brief(self) -> None:
        if self.step is not None:
            self.watch_step(self.step)

    def watch_compact(self) -> None:
        if self.step is not None:
            self.watch_step(self.step)

    def watch_highlight(self) -> None:
        if self.step is not None:
            self.watch_step(self.step)

    def _lines(self, step: protocol.StepCaptured) -> list[tuple[tuple[str, ...], Content]]:
        """Each line with the evidence paths it shows (``relation.same_object``, ``cos.nan``)."""
        lines: list[tuple[tuple[str, ...], Content]] = []
        cos = step.cos
        if step.error is not None:
            lines.append((("error",), Content.styled("torch raised:", palette.ALARM)))
            lines.append((("error",), Content.styled(step.error, palette.ALARM)))
            lines.append(((), Content.styled("no similarity was computed", palette.CAUTION)))
            lines.append(((), Content.styled("(the script received this exception)", palette.LABEL)))
        elif cos is None:
            lines.append((("cos",), Content.styled("no similarity was computed", palette.CAUTION)))
        else:
            if not math.isfinite(cos.mean) or self.compact:
                # The large number's place: it stands for the similarity itself.
                lines.append(
                    (
                        ("cos", "cos.mean", "cos.nan"),
                        Content.assemble(
                            _label("cos " if self.compact else "mean cos "),
                            (fmt_cos(cos.mean), palette.ALARM if not math.isfinite(cos.mean) else palette.EMPHASIS),
                        ),
                    )
                )
            lines.append(
                (
                    ("cos.count", "cos.angle_deg"),
                    Content.assemble(
                        _label("mean of " if not self.compact else ""), fmt_plural(cos.count, "row"), _label(" · "), fmt_angle(cos.angle_deg.mean)
                    ),
                )
            )
            lines.append(
                (
                    ("cos.min", "cos.max"),
                    Content.assemble(_label("min "), fmt_cos(cos.min), _label("  max "), fmt_cos(cos.max)),
                )
            )
            # About eight cells per value; show as many as the panel's width holds.
            limit = max(1, (self.content_size.width - 8) // 8) if self.content_size.width else 3
            more = cos.count > min(limit, len(cos.first))
            if not (self.compact and cos.count == 1) and not self.brief:  # (one row: its value is the mean, just above)
                lines.append(
                    (
                        ("cos.first",),
                        Content.assemble(_label("first "), fmt_cos_values(cos.first, limit=limit, more=more)),
                    )
                )
            if cos.nan:
                lines.append((("cos.nan",), Content.assemble(_label("nan rows "), (str(cos.nan), palette.ALARM))))
        relation = step.relation
        if relation is None:
            lines.append(((), Content.styled("relation unknown", palette.LABEL)))
            return lines
        if self.compact:
            lines.append(
                (
                    ("relation.dim", "relation.dim_size"),
                    Content.assemble(_label("dim "), str(relation.dim), _label(" size "), str(relation.dim_size)),
                )
            )
        lines.append(
            (("relation.same_object",), Content.assemble(_label("same object    "), _answer(relation.same_object)))
        )
        lines.append(
            (
                ("relation.shares_storage",),
                Content.assemble(_label("shares storage "), _answer(relation.shares_storage)),
            )
        )
        lines.append(
            (("relation.equal_values",), Content.assemble(_label("equal values   "), _answer(relation.equal_values)))
        )
        lines.append(
            (
                ("relation.max_abs_diff",),
                Content.assemble(_label("max |a−b|      "), fmt_float(relation.max_abs_diff)),
            )
        )
        if relation.broadcast_shape is not None:
            lines.append(
                (
                    ("relation.broadcast_shape",),
                    Content.assemble(_label("broadcast to "), (fmt_shape(relation.broadcast_shape), palette.CAUTION)),
                )
            )
        return lines

    def on_resize(self) -> None:
        # How many first rows fit depends on the width.
        if self.step is not None:
            self.watch_step(self.step)
