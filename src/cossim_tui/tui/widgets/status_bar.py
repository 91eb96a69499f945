"""The one line at the top that says what is running and where the run stands.

It answers the first question after any key press ("did it do something?"): starting,
running, pausing, paused at which step, or how the script ended, and how many calls
have been intercepted so far.
"""

from __future__ import annotations

from typing import Literal

from textual.app import RenderResult
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_plural

Phase = Literal["starting", "running", "pausing", "paused", "ended", "failed"]
"""Where the run stands; ``failed`` is an end that the user should look into."""


class StatusBar(Widget):
    """``cossim-tui · <state> · <N> steps · <target>``.

    The state comes first: a long script path may be cut at the right edge, the state never.
    """

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
    }
    """

    target: reactive[str] = reactive("")
    state: reactive[str] = reactive("starting…")
    """The state in words, as the user reads it."""
    phase: reactive[Phase] = reactive("starting")
    """The state as a kind, so the stylesheet can colour it (``StatusBar.-paused``)."""
    steps: reactive[int] = reactive(0)
    """Every call intercepted so far, not only those still kept in memory."""

    def watch_phase(self, old: Phase, new: Phase) -> None:
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")

    def render(self) -> RenderResult:
        return Content.assemble(
            ("cossim-tui", palette.EMPHASIS),
            " · ",
            (self.state, palette.EMPHASIS),
            " · ",
            fmt_plural(self.steps, "step"),
            " · ",
            self.target,
        )
