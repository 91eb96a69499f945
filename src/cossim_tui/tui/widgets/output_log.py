"""The script's own stdout and stderr, inside the TUI (what memray users asked for, #786).

Output arrives in whatever chunks the pipe delivered, often in the middle of a line;
``Log.write`` joins them into lines. Lines from cossim-tui itself (a broken channel, torch
being hooked) are marked so they are never mistaken for the script's output. The pane follows
the output to its last line, so that a traceback's final "Type: message" is in view.
"""

from __future__ import annotations

from textual.widgets import Log

from cossim_tui.session.replay import printable

MAX_LINES = 5000
"""Enough to scroll back through a training run's recent output without growing forever."""

NOTE_MARK = "▌cossim-tui: "


class OutputPane(Log):
    """A bounded log of everything the script printed."""

    def __init__(self, *, max_lines: int = MAX_LINES, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=max_lines, id=id, classes=classes)
        self.border_title = "output"

    def write_output(self, text: str) -> None:
        """A chunk of the script's output as it arrived, with control characters made visible:
        an escape sequence a script prints must not clear or retitle the user's terminal."""
        self._write_and_follow(printable(text))

    def write_note(self, text: str) -> None:
        """A line from cossim-tui itself, on a line of its own."""
        partial_line = bool(self.lines) and self.lines[-1] != ""
        self._write_and_follow(f"{chr(10) if partial_line else ''}{NOTE_MARK}{text}\n")

    def _write_and_follow(self, text: str) -> None:
        self.write(text)
        if self.auto_scroll:
            # ``write`` scrolled at once, to the end of the lines laid out so far: the lines it
            # added (and the horizontal scrollbar a long one brings) count only after the next
            # refresh, so the pane stopped short of its last lines. Scroll again after it.
            self.scroll_end(animate=False, x_axis=False)
