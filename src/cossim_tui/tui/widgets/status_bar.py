"""The one line at the top that says what is running and where the run stands.

It answers the first question after any key press ("did it do something?"): starting,
running, pausing, paused at which step, or how the script ended, and how many calls
have been intercepted so far. While an earlier step is on screen it says so first, in a style
of its own (``-history``), so that history is never mistaken for the live step.
"""

from __future__ import annotations

from textual.app import RenderResult
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_int, fmt_plural
from cossim_tui.tui.model import Phase


class StatusBar(Widget):
    """``cossim-tui · <state> · <N> steps · <target>``.

    The state comes first: a long script path may be cut at the right edge, the state never.
    While ``viewing`` an earlier step: ``cossim-tui · viewing step 3 of 17 (history) — press l
    for the live step · live: <state> · <target>``.
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

    viewing: reactive[int | None] = reactive(None)
    """The earlier step on screen; ``None`` while the screen follows the live run."""

    def watch_phase(self, old: Phase, new: Phase) -> None:
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")

    def watch_viewing(self, viewing: int | None) -> None:
        self.set_class(viewing is not None, "-history")

    def render(self) -> RenderResult:
        if self.viewing is not None:
            return Content.assemble(
                ("cossim-tui", palette.EMPHASIS),
                " · ",
                (f"viewing step {self.viewing} of {fmt_int(self.steps)} (history)", palette.EMPHASIS),
                " — press l for the live step · live: ",
                self.state,
                " · ",
                self.target,
            )
        return Content.assemble(
            ("cossim-tui", palette.EMPHASIS),
            " · ",
            (self.state, palette.EMPHASIS),
            " · ",
            fmt_plural(self.steps, "step"),
            " · ",
            self.target,
        )
