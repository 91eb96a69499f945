"""The script's own stdout and stderr, inside the TUI (what memray users asked for, #786).

Output arrives in whatever chunks the pipe delivered, often in the middle of a line;
``Log.write`` joins them into lines. Lines from cossim-tui itself (a broken channel, torch
being hooked) are marked so they are never mistaken for the script's output. A line wider
than the pane goes on in the next row, marked ``↪``, rather than scrolling the pane sideways
(at the width the pane had when the line arrived). The pane follows the output to its last
line, so that a traceback's final "Type: message" is in view.
"""

from __future__ import annotations

import re

from textual.widgets import Log

from cossim_tui.session.replay import printable

MAX_LINES = 5000
"""Enough to scroll back through a training run's recent output without growing forever."""

NOTE_MARK = "▌cossim-tui: "

CONTINUED = "↪ "
"""Starts a row that goes on with the line above (a wrap, not a newline the script printed)."""

_LINE_END = re.compile(r"(\r\n|\n|\r)")


class OutputPane(Log):
    """A bounded log of everything the script printed."""

    def __init__(self, *, max_lines: int = MAX_LINES, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=max_lines, id=id, classes=classes)
        self.border_title = "output"
        self._waiting: list[str] = []
        """What arrived before the pane had a width to wrap it at."""

    def write_output(self, text: str) -> None:
        """A chunk of the script's output as it arrived, with control characters made visible:
        an escape sequence a script prints must not clear or retitle the user's terminal."""
        self._put(printable(text))

    def write_note(self, text: str) -> None:
        """A line from cossim-tui itself, on a line of its own."""
        if self._waiting:
            partial_line = not self._waiting[-1].endswith("\n")
        else:
            partial_line = bool(self.lines) and self.lines[-1] != ""
        self._put(f"{chr(10) if partial_line else ''}{NOTE_MARK}{text}\n")

    def _put(self, text: str) -> None:
        if not self.content_region.width:
            # Not laid out yet (torch's note can come first): wrapped once the width is known.
            self._waiting.append(text)
            return
        self._write_and_follow(self._wrapped(text))

    def on_resize(self) -> None:
        if self._waiting and self.content_region.width:
            waiting, self._waiting = "".join(self._waiting), []
            self._write_and_follow(self._wrapped(waiting))

    def _write_and_follow(self, text: str) -> None:
        self.write(text)
        if self.auto_scroll:
            # ``write`` scrolled at once, to the end of the lines laid out so far: the lines it
            # added count only after the next refresh, so the pane stopped short of its last
            # lines. Scroll again after it.
            self.scroll_end(animate=False, x_axis=False)

    def _wrapped(self, text: str) -> str:
        """``text`` with a break (and ``CONTINUED``) wherever a line would pass the pane's
        right edge, after a space where one is near; the line already begun counts."""
        # The width left once the vertical scrollbar shows, so that a full pane stays as wide.
        width = self.content_region.width - self.styles.scrollbar_size_vertical
        if width < 20:
            return text  # not laid out yet, or too narrow to wrap usefully
        column = len(self.lines[-1]) if self.lines else 0
        out: list[str] = []
        for piece in _LINE_END.split(text):
            if _LINE_END.fullmatch(piece):
                out.append(piece)
                column = 0
                continue
            while column + len(piece) > width:
                room = width - column
                space = piece.rfind(" ", 0, room)
                cut = space + 1 if space >= room // 2 else room
                out += [piece[:cut], "\n", CONTINUED]
                piece = piece[cut:]
                column = len(CONTINUED)
            out.append(piece)
            column += len(piece)
        return "".join(out)
