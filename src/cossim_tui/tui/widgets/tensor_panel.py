"""One argument of the intercepted call, summarised the way lovely-tensors reads.

Two of these stand side by side so the user can compare the operands line by line: where
they came from (expression, autograd, the module that made them), what they hold (norms,
values, NaN/Inf, the first values) and where they live (storage address, offset, strides). A
low screen has no rows for the last two (``hidden``): the summary then says that ``d`` shows
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import RenderResult
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import (
    fmt_address,
    fmt_float,
    fmt_int,
    fmt_plural,
    fmt_shape,
    fmt_values,
    pack,
)
from cossim_tui.tui.highlight import NO_HIGHLIGHT, Highlight, light_up, mark

_STRIDED = ("strided", "torch.strided")

_INDENT = 7
"""Where values start after a label (``norm   ``): a field moved to the next line starts there."""


@dataclass(frozen=True)
class _Line:
    """One line of the summary as fields; ``pack`` moves whole fields to a next line when the panel is narrow."""

    fields: list[Content | str]
    gap: str = "  "
    indent: int = _INDENT


def _label(text: str) -> tuple[str, str]:
    return (text, palette.LABEL)


def autograd_state(summary: protocol.TensorSummary) -> tuple[str, str]:
    """How gradients reach this tensor, in words, with the style that words deserve."""
    if not summary.requires_grad:
        return ("detached", palette.CAUTION)
    if summary.grad_fn:
        return (summary.grad_fn, palette.VALUE)
    return ("leaf (requires grad)", palette.VALUE)


class TensorPanel(Widget):
    """One ``TensorSummary``; its border title is the argument's source expression.

    ``highlight`` lights up the lines (or, for ``args.N``, the whole border) that prove the
    finding selected in the findings panel.
    """

    # ``layout``: the panel is as tall as its lines, and a narrow one has more of them.
    summary: reactive[protocol.TensorSummary | None] = reactive(None, layout=True)
    highlight: reactive[Highlight] = reactive(NO_HIGHLIGHT)
    hidden: reactive[frozenset[str]] = reactive(frozenset(), layout=True)
    """Lines left out for a low screen: ``storage`` (ptr, strides), ``preview`` (first values)."""

    def __init__(self, index: int, *, id: str | None = None, classes: str | None = None) -> None:
        """``index`` is the argument's position in the call; shown under the border in torch's words (``x1``)."""
        super().__init__(id=id, classes=classes)
        self.index = index
        self.border_subtitle = f"x{index + 1}"

    def watch_summary(self) -> None:
        self._titles()

    def watch_hidden(self) -> None:
        self._titles()

    def _titles(self) -> None:
        """The expression above, ``x1`` below; where lines are left out, "d: more" beside the
        one in view (under 30 rows the bottom border is gone)."""
        summary = self.summary
        # A Content title, not a str: expressions such as ``z[None, :]`` are not markup.
        title = Content(summary.expr) if summary is not None else None
        subtitle = Content(f"x{self.index + 1}")
        more = Content.styled(" · d: more", palette.LABEL)
        if title is not None and summary is not None and self._left_out(summary):
            if "preview" in self.hidden:
                title = Content.assemble(title, more)
            else:
                subtitle = Content.assemble(more[3:], " · ", subtitle)
        self.border_title = title
        self.border_subtitle = subtitle

    def _left_out(self, s: protocol.TensorSummary) -> bool:
        """Whether a line of ``s`` is left out (``hidden``)."""
        return "preview" in self.hidden or ("storage" in self.hidden and s.storage is not None)

    def watch_highlight(self, highlight: Highlight) -> None:
        mark(self, highlight, highlight.shows(f"args.{self.index}"))

    def render(self) -> RenderResult:
        summary = self.summary
        if summary is None:
            return Content.styled("waiting for the first call…", palette.LABEL)
        highlight, width = self.highlight, self.content_size.width
        prefix = f"args.{self.index}."
        rows: list[Content] = []
        for fields, line in self._lines(summary):
            # A line too long for the panel goes on in the next one, a whole field at a time:
            # "at step 1" or "max 1.895e+04" must be read whole, never cut by the right border.
            packed = pack(line.fields, width, gap=line.gap, indent=line.indent)
            if highlight.shows(*(prefix + field for field in fields)):
                packed = [light_up(row, highlight, width) for row in packed]
            rows += packed
        return Content("\n").join(rows)

    def _lines(self, s: protocol.TensorSummary) -> list[tuple[tuple[str, ...], _Line]]:
        """Each line with the ``TensorSummary`` fields it shows (what evidence paths name)."""
        kind = [s.dtype, s.device] + ([s.layout] if s.layout not in _STRIDED else [])
        lines: list[tuple[tuple[str, ...], _Line]] = [
            (
                ("shape", "dtype", "device", "layout"),
                _Line([Content.styled(fmt_shape(s.shape), palette.EMPHASIS), *kind]),
            ),
            (("grad_fn", "requires_grad", "is_leaf"), _Line([Content.assemble(_label("autograd "), autograd_state(s))])),
        ]
        # Where it came from, on one line: the module call that made it (with its input image,
        # ``i`` shows it) and/or the DataLoader batch it is part of.
        origin: list[Content] = []
        if s.made_by is not None:
            origin += [
                Content.assemble(_label("made by "), f"{s.made_by.module} #{s.made_by.call}"),
                Content.assemble(_label("at step "), str(s.made_by.step)),
            ]
        if s.from_loader:
            origin.append(Content.assemble(_label("· ") if origin else "", ("from the DataLoader batch", palette.VALUE)))
        if s.input_image is not None:
            origin.append(Content.styled("· image (i)", palette.LABEL))
        if origin:
            lines.append((("made_by", "from_loader", "input_image"), _Line(origin, gap=" ", indent=_INDENT)))
        if s.note:
            lines.append((("note",), _Line([Content.assemble(_label("note "), (s.note, palette.CAUTION))])))
        norm = ("norm", "rows")
        if s.norm is not None:
            lines.append(
                (
                    norm,
                    _Line(
                        [
                            Content.assemble(_label("norm   min "), fmt_float(s.norm.min)),
                            Content.assemble(_label("max "), fmt_float(s.norm.max)),
                        ]
                    ),
                )
            )
            lines.append(
                (
                    norm,
                    _Line(
                        [
                            Content.assemble(_label("       mean "), fmt_float(s.norm.mean)),
                            Content.assemble(_label("over "), fmt_plural(s.rows, "row")),
                        ]
                    ),
                )
            )
        else:
            lines.append((norm, _Line([Content.assemble(_label("norm   "), "n/a")])))
        values = "values" if not s.sampled else "sample"
        if s.stats is not None:
            lines.append(
                (
                    ("stats",),
                    _Line(
                        [
                            Content.assemble(_label(f"{values} min "), fmt_float(s.stats.min)),
                            Content.assemble(_label("max "), fmt_float(s.stats.max)),
                        ]
                    ),
                )
            )
            lines.append(
                (
                    ("stats",),
                    _Line(
                        [
                            Content.assemble(_label("       mean "), fmt_float(s.stats.mean)),
                            Content.assemble(_label("std "), fmt_float(s.stats.std)),
                        ]
                    ),
                )
            )
        else:
            lines.append((("stats",), _Line([Content.assemble(_label(f"{values} "), "n/a")])))
        nan_inf = [
            Content.assemble(_label("nan "), (fmt_int(s.nan), palette.ALARM if s.nan else palette.VALUE)),
            Content.assemble(_label("inf "), (fmt_int(s.inf), palette.ALARM if s.inf else palette.VALUE)),
        ]
        if s.nan or s.inf:
            nan_inf.append(Content.assemble(_label("of "), fmt_int(s.numel)))
        lines.append((("nan", "inf"), _Line(nan_inf, indent=4)))
        if s.sampled:
            lines.append(
                (("sampled",), _Line([Content.styled(f"sampled: stats from part of {fmt_int(s.numel)}", palette.CAUTION)]))
            )
        # About nine cells per value; show as many as the panel's width holds.
        limit = max(2, (self.content_size.width - 9) // 9) if self.content_size.width else 4
        more = len(s.preview) < s.numel
        if "preview" not in self.hidden:
            lines.append(
                (("preview",), _Line([Content.assemble(_label("first  "), fmt_values(s.preview, limit=limit, more=more))]))
            )
        if s.storage is not None and "storage" not in self.hidden:
            lines.append(
                (
                    ("storage",),
                    _Line(
                        [Content.assemble(_label("ptr    "), fmt_address(s.storage.ptr)), f"+{s.storage.offset}"],
                        gap=" ",
                        indent=_INDENT,
                    ),
                )
            )
            lines.append((("storage",), _Line([Content.assemble(_label("strides "), fmt_shape(s.storage.strides))])))
        return lines
