"""The call on screen, on every rank of the job at the same step, side by side (``a``).

One row per rank: its similarity (min, mean, max), the mean norm of each argument, and which
arguments equal the shown rank's (as far as their summaries tell: ``diagnostics.ranks``): equal
vectors on two ranks at one step mean the ranks train on the same batch. A rank not at that
step yet, or whose step is no longer kept, says so. Escape (or ``a``) closes it.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from cossim_tui import protocol
from cossim_tui.diagnostics.ranks import equal_arguments
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_cos, fmt_float
from cossim_tui.tui.screens.view import InspectorView

RankRow = tuple[int, "protocol.StepCaptured | None", str]
"""A rank, its step at the shown step's number and site (``None`` when it has none), and where
the rank is otherwise (``at step 1``)."""


def across_rows(shown: protocol.StepCaptured, shown_rank: int, rows: list[RankRow]) -> list[Content]:
    """The table's lines: a header, then one line per rank."""
    names = [arg.expr for arg in shown.args]
    lines = [
        Content.styled(f"across ranks · step {shown.step} · {shown.site.label}", palette.EMPHASIS),
        Content.styled(f"{'rank':<6}{'similarity min / mean / max':<30}" + "".join(f"{'norm ' + n:<16}"[:16] for n in names) + "inputs", palette.LABEL),
    ]
    for rank, step, where in rows:
        mark = "▸" if rank == shown_rank else " "
        if step is None:
            lines.append(Content.assemble(f"{mark}{rank:<5}", (where, palette.LABEL)))
            continue
        cos = step.cos
        similarity = f"{fmt_cos(cos.min)} / {fmt_cos(cos.mean)} / {fmt_cos(cos.max)}" if cos is not None else "—"
        norms = "".join(f"{fmt_float(arg.norm.mean) if arg.norm is not None else '—':<16}" for arg in step.args)
        if rank == shown_rank:
            inputs = Content.styled("(shown)", palette.LABEL)
        else:
            equal = equal_arguments(shown, step)
            inputs = (
                Content.styled("equal " + ", ".join(names[i] for i in equal) + f" to rank {shown_rank}'s", palette.ALARM)
                if equal
                else Content("different")
            )
        lines.append(Content.assemble(f"{mark}{rank:<5}", f"{similarity:<30}", norms, inputs))
    return lines


class AcrossRanksScreen(InspectorView[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("a", "close", "Close", show=False),
    ]

    def __init__(self, lines: list[Content]) -> None:
        super().__init__()
        self._lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(id="across-box"):
            yield Static(Content("\n").join(self._lines), id="across-table")
            yield Static(Content.styled("escape close · k or a digit shows another rank", palette.LABEL))

    def action_close(self) -> None:
        self.dismiss(None)
