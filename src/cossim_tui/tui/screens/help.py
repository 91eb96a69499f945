"""The keys, in one place, over the inspector; ``?`` or escape closes it.

In a narrow terminal a description goes on under itself, past the column of keys, and a low
one scrolls the list: no line is cut at the box's edge.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from cossim_tui.tui import palette
from cossim_tui.tui.screens.view import InspectorView


def describe_break_on(break_on: str) -> str:
    """What ``continue`` stops at, from the ``--break-on`` value."""
    if break_on == "never":
        return "never stops (like run)"
    if break_on in ("error", "warning", "info"):
        return f"stops at the next finding of severity {break_on} or above"
    return f"stops at the next finding among: {break_on.replace(',', ', ')}"


class HelpScreen(InspectorView[None]):
    """Lists what each key does while the script is being inspected."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close"),
    ]

    def __init__(self, break_on: str = "error", *, job: bool = False) -> None:
        super().__init__()
        self.break_on = break_on
        self.job = job
        """A job of several ranks is inspected: its keys are listed too."""

    def compose(self) -> ComposeResult:
        keys = [
            ("n, space", "step: run to the next cosine-similarity call and pause there"),
            ("c", f"continue: {describe_break_on(self.break_on)}"),
            ("r", "run: let the script run without stopping (the screen follows it)"),
            ("p", "pause at the next call"),
            ("ctrl+c", "pause at the next call, as in pdb; again (paused, or still pausing): quit"),
            ("m", "mute the selected finding's code at its call site"),
            ("↑ ↓", "choose a finding to read its explanation and fix; what proves it lights up"),
            ("b", "break condition: c also stops where a Python expression holds (cos.mean > 0.999)"),
            ("i", "the input images the two vectors were made from, side by side"),
            ("f", "findings so far, by call site; enter shows the step where one first appeared"),
            ("l", "back to the live step after viewing an earlier one (n, c, r also return)"),
            ("[ ] ← →", "while paused: the previous / next kept step; past the newest is the live step"),
            ("g", "history plot: similarity and norms per step, findings marked (g again: back)"),
            ("e", "embedding map: PCA of the recent vectors of both sides, coloured by label when the batch has one (e again: back)"),
            ("d", "details: the tensors' storage (ptr, strides) and first values, which under 40 rows give their lines to the call (\"d: more\"); they take the source's place (d again: back)"),
            *(
                [
                    ("k, 0-9", "a torchrun job: show the next rank, or that rank (n, c, r and p act on every rank)"),
                    ("a", "the call on screen on every rank at the same step: similarity, norms, equal inputs"),
                ]
                if self.job
                else []
            ),
            ("s", "save an SVG screenshot of the screen"),
            ("tab", "move between the findings and the output (under 30 rows, the output then takes the tensors' place)"),
            ("?", "this help (? or escape closes it)"),
            ("q", "quit: stop the script and leave"),
        ]
        self.keys = keys
        with VerticalScroll(id="help-box"):
            yield Static(self._text(0), id="help-text")

    def on_resize(self, event: events.Resize) -> None:
        # The box is at most 90% of the screen, inside a thick border, two cells of padding and
        # a scrollbar where the screen is too low for every line.
        width = int(event.size.width * 0.9) - 8
        self.query_one("#help-text", Static).update(self._text(width))

    def _text(self, width: int) -> Content:
        """Each key and what it does; a description too long for ``width`` goes on under
        itself, past the key column, rather than being cut at the box's edge (0: one line each)."""
        column = 11
        lines = [Content.styled("cossim-tui keys", palette.EMPHASIS), Content("")]
        for key, text in self.keys:
            rows = Content(text).wrap(width - column) if width > column + 10 else [Content(text)]
            lines.append(Content.assemble((f"{key:>9}  ", palette.EMPHASIS), rows[0]))
            lines += [Content.assemble(" " * column, row) for row in rows[1:]]
        return Content("\n").join(lines)

    def action_close(self) -> None:
        self.dismiss(None)
