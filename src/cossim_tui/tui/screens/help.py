"""The keys, in one place, over the inspector; ``?`` or escape closes it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
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

    def __init__(self, break_on: str = "error") -> None:
        super().__init__()
        self.break_on = break_on

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
            ("s", "save an SVG screenshot of the screen"),
            ("tab", "move between the findings and the output"),
            ("?", "this help (? or escape closes it)"),
            ("q", "quit: stop the script and leave"),
        ]
        lines = [Content.styled("cossim-tui keys", palette.EMPHASIS), Content("")]
        lines += [Content.assemble((f"{key:>9}  ", palette.EMPHASIS), text) for key, text in keys]
        with Vertical(id="help-box"):
            yield Static(Content("\n").join(lines), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
