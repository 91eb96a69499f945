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


def _fits(form: Content, width: int, lines: int) -> bool:
    return form.cell_length <= width if lines == 1 else len(form.wrap(width)) <= lines


def _brief(state: str) -> str:
    """The state without what it says in parentheses, for a line too short for all of it
    (``finished (exit code 0)`` → ``finished``, ``killed by signal 9 (SIGKILL)`` → ``killed by
    signal 9``), or only a non-zero exit code (``exit code 3``). A failure's message stays: the
    form after this one cuts it after the script's name, where it still says what was raised."""
    head, _, rest = state.partition(" (")
    if ": " in head:
        return state  # a message (what was raised) is never shortened but by an ellipsis
    if rest.startswith("exit code ") and rest != "exit code 0)":
        return rest.rstrip(")")  # a non-zero exit code is the news: ``exit code 3``
    return head


class StatusBar(Widget):
    """``cossim-tui · <state> · <N> steps · <target>``.

    The state and the script's name are always there: where the line is short, the brand,
    the script's folder and the step count give way first (``paused at step 1 · train.py``).
    While ``viewing`` an earlier step: ``cossim-tui · viewing step 3 of 17 (history) — press l
    for the live step · live: <state> · <target>``, shortened the same way.
    """

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
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
    history_lines: reactive[int] = reactive(2)
    """Lines the top line may take while ``viewing`` history: 1 on a screen under 30 rows."""

    def watch_phase(self, old: Phase, new: Phase) -> None:
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")

    def watch_viewing(self, viewing: int | None) -> None:
        self.set_class(viewing is not None, "-history")

    def render(self) -> RenderResult:
        width = self.content_size.width
        forms = self._forms()
        # The fullest form that fits; the state and the script's name are in every one.
        # Viewing history may take two lines (``-history`` wraps) where the screen has a row to
        # spare; under 30 rows it has none: the shorter forms end in the script's name.
        lines = self.history_lines if self.viewing is not None else 1
        for form in forms:
            if not width or _fits(form, width, lines):
                return form
        shortest = forms[-1]
        return shortest

    def _forms(self) -> list[Content]:
        """What the line can say, fullest first: the brand, the script's folder, the step
        count and the wording go, about in that order, before the state or the script's name."""
        target = self.target
        script, replaying, trace = target.partition(" (replay of ")
        base = script.replace("\\", "/").rsplit("/", 1)[-1]
        name = base + replaying + trace
        # A replay's name without its trace's ("quit by the user" was cut at 80x24).
        short_name = f"{base} (replay)" if replaying else base
        brand = [Content.styled("cossim-tui", palette.EMPHASIS)]
        forms: list[list[Content | str]] = []
        if self.viewing is not None:
            viewing = Content.styled(f"viewing step {self.viewing} of {fmt_int(self.steps)} (history)", palette.EMPHASIS)
            press = Content.assemble(viewing, " — press l for the live step")
            short = Content.styled(f"viewing step {self.viewing} of {fmt_int(self.steps)}", palette.EMPHASIS)
            live = Content.assemble("live: ", self.state)
            forms = [
                [*brand, press, live, target],
                [*brand, viewing, "l: live", live, target],
                [*brand, viewing, "l: live", target],
                [viewing, "l: live", live, target],
                [viewing, "l: live", target],
                [short, "l: live", target],
                [short, "l: live", name],
                # The footer's "l Live" says how back; the inverted line says it is history.
                [short, name],
                [short, short_name],
                [Content.styled(f"history {self.viewing}/{fmt_int(self.steps)}", palette.EMPHASIS), short_name],
            ]
        else:
            state = Content.styled(self.state, palette.EMPHASIS)
            steps = fmt_plural(self.steps, "step")
            brief = Content.styled(_brief(self.state), palette.EMPHASIS)
            forms = [
                [*brand, state, steps, target],
                [state, steps, target],
                [state, steps, name],
                [state, target],
                [state, name],
                [brief, name],
                [brief, short_name],
                [brief, base],
                # A state too long for the line (a failure's message) is cut after the name.
                [Content.styled(short_name, palette.EMPHASIS), self.state],
            ]
        return [Content(" · ").join(Content(part) if isinstance(part, str) else part for part in form) for form in forms]
