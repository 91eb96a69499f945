"""The middle panel: the similarity the call produced and how the two arguments relate.

The mean similarity is drawn large because it is the number the user came for. Under it,
the three questions that explain most similarities stuck at 1 get a plain YES or NO: are
the arguments the same object, do they share storage, are their values equal. When torch
raised instead of returning, the error takes the number's place.
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


def _label(text: str) -> tuple[str, str]:
    return (text, palette.LABEL)


def _answer(answer: bool | None) -> tuple[str, str]:
    """YES/NO with its colour: for these three questions YES is the bug."""
    if answer is None:
        return ("n/a (shapes differ)", palette.LABEL)
    return (fmt_yes_no(answer), palette.ALARM if answer else palette.CALM)


class RelationPanel(Vertical):
    """Similarity (large), its spread and angle, and the relation between the arguments."""

    step: reactive[protocol.StepCaptured | None] = reactive(None, init=False)

    def compose(self) -> ComposeResult:
        digits = Digits("", id="mean-cos")
        digits.display = False
        yield digits
        yield Static(Content.styled("waiting for the first call…", palette.LABEL), id="relation-text")

    def watch_step(self, step: protocol.StepCaptured | None) -> None:
        digits = self.query_one("#mean-cos", Digits)
        text = self.query_one("#relation-text", Static)
        if step is None:
            self.border_title = None
            self.border_subtitle = None
            digits.display = False
            text.update(Content.styled("waiting for the first call…", palette.LABEL))
            return
        self.border_title = Content(f"step {step.step} · {step.label or step.function}")
        relation = step.relation
        self.border_subtitle = (
            Content(f"dim {relation.dim} · size {relation.dim_size}") if relation is not None else None
        )
        cos = step.cos
        # Digits can only draw numbers; NaN and errors are spelled out in the text below.
        big = step.error is None and cos is not None and math.isfinite(cos.mean)
        digits.display = big
        if big:
            assert cos is not None
            digits.update(fmt_cos(cos.mean))
        text.update(Content("\n").join(self._lines(step)))

    def _lines(self, step: protocol.StepCaptured) -> list[Content]:
        lines: list[Content] = []
        cos = step.cos
        if step.error is not None:
            lines.append(Content.styled("torch raised:", palette.ALARM))
            lines.append(Content.styled(step.error, palette.ALARM))
            lines.append(Content.styled("(the script received this exception)", palette.LABEL))
        elif cos is None:
            lines.append(Content.styled("no similarity was computed", palette.CAUTION))
        else:
            if not math.isfinite(cos.mean):
                lines.append(Content.assemble(_label("mean cos "), (fmt_cos(cos.mean), palette.ALARM)))
            lines.append(
                Content.assemble(
                    _label("mean of "), fmt_plural(cos.count, "row"), _label(" · "), fmt_angle(cos.angle_deg.mean)
                )
            )
            lines.append(
                Content.assemble(_label("min "), fmt_cos(cos.min), _label("  max "), fmt_cos(cos.max))
            )
            # About eight cells per value; show as many as the panel's width holds.
            limit = max(1, (self.content_size.width - 8) // 8) if self.content_size.width else 3
            more = cos.count > min(limit, len(cos.first))
            lines.append(Content.assemble(_label("first "), fmt_cos_values(cos.first, limit=limit, more=more)))
            if cos.nan:
                lines.append(Content.assemble(_label("nan rows "), (str(cos.nan), palette.ALARM)))
        relation = step.relation
        if relation is None:
            lines.append(Content.styled("relation unknown", palette.LABEL))
            return lines
        lines.append(Content.assemble(_label("same object    "), _answer(relation.same_object)))
        lines.append(Content.assemble(_label("shares storage "), _answer(relation.shares_storage)))
        lines.append(Content.assemble(_label("equal values   "), _answer(relation.equal_values)))
        lines.append(Content.assemble(_label("max |a−b|      "), fmt_float(relation.max_abs_diff)))
        if relation.broadcast_shape is not None:
            lines.append(
                Content.assemble(_label("broadcast to "), (fmt_shape(relation.broadcast_shape), palette.CAUTION))
            )
        return lines

    def on_resize(self) -> None:
        # How many first rows fit depends on the width.
        if self.step is not None:
            self.watch_step(self.step)
