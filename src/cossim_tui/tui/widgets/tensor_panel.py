"""One argument of the intercepted call, summarised the way lovely-tensors reads.

Two of these stand side by side so the user can compare the operands line by line: where
they came from (expression, autograd, the module that made them), what they hold (norms,
values, NaN/Inf, the first values) and where they live (storage address, offset, strides).
"""

from __future__ import annotations

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
)

_STRIDED = ("strided", "torch.strided")


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
    """One ``TensorSummary``; its border title is the argument's source expression."""

    summary: reactive[protocol.TensorSummary | None] = reactive(None)

    def __init__(self, position: str, *, id: str | None = None, classes: str | None = None) -> None:
        """``position`` names the argument in torch's words (``x1``, ``x2``), shown under the border."""
        super().__init__(id=id, classes=classes)
        self.position = position
        self.border_subtitle = position

    def watch_summary(self, summary: protocol.TensorSummary | None) -> None:
        # A Content title, not a str: expressions such as ``z[None, :]`` are not markup.
        self.border_title = Content(summary.expr) if summary is not None else None

    def render(self) -> RenderResult:
        summary = self.summary
        if summary is None:
            return Content.styled("waiting for the first call…", palette.LABEL)
        return Content("\n").join(self._lines(summary))

    def _lines(self, s: protocol.TensorSummary) -> list[Content]:
        kind = [s.dtype, s.device] + ([s.layout] if s.layout not in _STRIDED else [])
        lines = [
            Content.assemble((fmt_shape(s.shape), palette.EMPHASIS), "  ", "  ".join(kind)),
            Content.assemble(_label("autograd "), autograd_state(s)),
        ]
        if s.made_by is not None:
            lines.append(
                Content.assemble(
                    _label("made by "),
                    f"{s.made_by.module} #{s.made_by.call}",
                    _label(" at step "),
                    str(s.made_by.step),
                )
            )
        if s.note:
            lines.append(Content.assemble(_label("note "), (s.note, palette.CAUTION)))
        if s.norm is not None:
            lines.append(
                Content.assemble(
                    _label("norm   min "), fmt_float(s.norm.min), _label("  max "), fmt_float(s.norm.max)
                )
            )
            lines.append(
                Content.assemble(
                    _label("       mean "), fmt_float(s.norm.mean), _label("  over "), fmt_plural(s.rows, "row")
                )
            )
        else:
            lines.append(Content.assemble(_label("norm   "), "n/a"))
        values = "values" if not s.sampled else "sample"
        if s.stats is not None:
            lines.append(
                Content.assemble(
                    _label(f"{values} min "), fmt_float(s.stats.min), _label("  max "), fmt_float(s.stats.max)
                )
            )
            lines.append(
                Content.assemble(
                    _label("       mean "), fmt_float(s.stats.mean), _label("  std "), fmt_float(s.stats.std)
                )
            )
        else:
            lines.append(Content.assemble(_label(f"{values} "), "n/a"))
        lines.append(
            Content.assemble(
                _label("nan "),
                (fmt_int(s.nan), palette.ALARM if s.nan else palette.VALUE),
                _label("  inf "),
                (fmt_int(s.inf), palette.ALARM if s.inf else palette.VALUE),
                _label("  of ") if s.nan or s.inf else "",
                fmt_int(s.numel) if s.nan or s.inf else "",
            )
        )
        if s.sampled:
            lines.append(Content.styled(f"sampled: stats from part of {fmt_int(s.numel)}", palette.CAUTION))
        # About nine cells per value; show as many as the panel's width holds.
        limit = max(2, (self.content_size.width - 9) // 9) if self.content_size.width else 4
        more = len(s.preview) < s.numel
        lines.append(Content.assemble(_label("first  "), fmt_values(s.preview, limit=limit, more=more)))
        if s.storage is not None:
            lines.append(
                Content.assemble(
                    _label("ptr    "), fmt_address(s.storage.ptr), _label(" +"), str(s.storage.offset)
                )
            )
            lines.append(Content.assemble(_label("strides "), fmt_shape(s.storage.strides)))
        return lines
