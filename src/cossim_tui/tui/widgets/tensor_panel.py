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
from cossim_tui.tui.highlight import NO_HIGHLIGHT, Highlight, light_up, mark

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
    """One ``TensorSummary``; its border title is the argument's source expression.

    ``highlight`` lights up the lines (or, for ``args.N``, the whole border) that prove the
    finding selected in the findings panel.
    """

    summary: reactive[protocol.TensorSummary | None] = reactive(None)
    highlight: reactive[Highlight] = reactive(NO_HIGHLIGHT)

    def __init__(self, index: int, *, id: str | None = None, classes: str | None = None) -> None:
        """``index`` is the argument's position in the call; shown under the border in torch's words (``x1``)."""
        super().__init__(id=id, classes=classes)
        self.index = index
        self.border_subtitle = f"x{index + 1}"

    def watch_summary(self, summary: protocol.TensorSummary | None) -> None:
        # A Content title, not a str: expressions such as ``z[None, :]`` are not markup.
        self.border_title = Content(summary.expr) if summary is not None else None

    def watch_highlight(self, highlight: Highlight) -> None:
        mark(self, highlight, highlight.shows(f"args.{self.index}"))

    def render(self) -> RenderResult:
        summary = self.summary
        if summary is None:
            return Content.styled("waiting for the first call…", palette.LABEL)
        highlight, width = self.highlight, self.content_size.width
        prefix = f"args.{self.index}."
        return Content("\n").join(
            light_up(line, highlight, width) if highlight.shows(*(prefix + field for field in fields)) else line
            for fields, line in self._lines(summary)
        )

    def _lines(self, s: protocol.TensorSummary) -> list[tuple[tuple[str, ...], Content]]:
        """Each line with the ``TensorSummary`` fields it shows (what evidence paths name)."""
        kind = [s.dtype, s.device] + ([s.layout] if s.layout not in _STRIDED else [])
        lines: list[tuple[tuple[str, ...], Content]] = [
            (
                ("shape", "dtype", "device", "layout"),
                Content.assemble((fmt_shape(s.shape), palette.EMPHASIS), "  ", "  ".join(kind)),
            ),
            (("grad_fn", "requires_grad", "is_leaf"), Content.assemble(_label("autograd "), autograd_state(s))),
        ]
        # Where it came from, on one line: the module call that made it (with its input image,
        # ``i`` shows it) and/or the DataLoader batch it is part of.
        origin: list[str | tuple[str, str]] = []
        if s.made_by is not None:
            origin += [_label("made by "), f"{s.made_by.module} #{s.made_by.call}", _label(" at step "), str(s.made_by.step)]
        if s.from_loader:
            origin += [_label(" · ") if origin else "", ("from the DataLoader batch", palette.VALUE)]
        if s.input_image is not None:
            origin.append(_label(" · image (i)"))
        if origin:
            lines.append((("made_by", "from_loader", "input_image"), Content.assemble(*origin)))
        if s.note:
            lines.append((("note",), Content.assemble(_label("note "), (s.note, palette.CAUTION))))
        norm = ("norm", "rows")
        if s.norm is not None:
            lines.append(
                (
                    norm,
                    Content.assemble(
                        _label("norm   min "), fmt_float(s.norm.min), _label("  max "), fmt_float(s.norm.max)
                    ),
                )
            )
            lines.append(
                (
                    norm,
                    Content.assemble(
                        _label("       mean "), fmt_float(s.norm.mean), _label("  over "), fmt_plural(s.rows, "row")
                    ),
                )
            )
        else:
            lines.append((norm, Content.assemble(_label("norm   "), "n/a")))
        values = "values" if not s.sampled else "sample"
        if s.stats is not None:
            lines.append(
                (
                    ("stats",),
                    Content.assemble(
                        _label(f"{values} min "), fmt_float(s.stats.min), _label("  max "), fmt_float(s.stats.max)
                    ),
                )
            )
            lines.append(
                (
                    ("stats",),
                    Content.assemble(
                        _label("       mean "), fmt_float(s.stats.mean), _label("  std "), fmt_float(s.stats.std)
                    ),
                )
            )
        else:
            lines.append((("stats",), Content.assemble(_label(f"{values} "), "n/a")))
        lines.append(
            (
                ("nan", "inf"),
                Content.assemble(
                    _label("nan "),
                    (fmt_int(s.nan), palette.ALARM if s.nan else palette.VALUE),
                    _label("  inf "),
                    (fmt_int(s.inf), palette.ALARM if s.inf else palette.VALUE),
                    _label("  of ") if s.nan or s.inf else "",
                    fmt_int(s.numel) if s.nan or s.inf else "",
                ),
            )
        )
        if s.sampled:
            lines.append(
                (("sampled",), Content.styled(f"sampled: stats from part of {fmt_int(s.numel)}", palette.CAUTION))
            )
        # About nine cells per value; show as many as the panel's width holds.
        limit = max(2, (self.content_size.width - 9) // 9) if self.content_size.width else 4
        more = len(s.preview) < s.numel
        lines.append((("preview",), Content.assemble(_label("first  "), fmt_values(s.preview, limit=limit, more=more))))
        if s.storage is not None:
            lines.append(
                (
                    ("storage",),
                    Content.assemble(
                        _label("ptr    "), fmt_address(s.storage.ptr), _label(" +"), str(s.storage.offset)
                    ),
                )
            )
            lines.append((("storage",), Content.assemble(_label("strides "), fmt_shape(s.storage.strides))))
        return lines
