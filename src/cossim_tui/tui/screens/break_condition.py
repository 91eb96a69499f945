"""Asks for the break condition (``b``): a Python expression that makes ``continue`` stop.

The expression is sent to the agent as typed; the agent compiles and evaluates it in the
paused call's frame, and answers with the condition in force (or why it refused it). Enter
sends it, an empty line clears the condition, escape changes nothing. One that does not
compile is not sent: the dialog stays open and says why, where the user is typing (it is
only compiled here, never evaluated: that happens in the script's frame).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from cossim_tui.tui import palette

EXAMPLES = "similarity.min() > 0.999   ·   cos.mean > 0.999   ·   args[1].norm.min < 1e-6   ·   step == 40"


def compile_problem(condition: str) -> str | None:
    """Why ``condition`` does not compile as an expression, in the agent's words; ``None`` when it does."""
    if not condition:
        return None
    try:
        compile(condition, "<break condition>", "eval")
    except (SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}"
    return None


class BreakConditionScreen(ModalScreen[str | None]):
    """Dismisses with the condition typed (``""`` to clear it), or ``None`` when escaped."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, condition: str = "") -> None:
        super().__init__()
        self.condition = condition

    def compose(self) -> ComposeResult:
        with Vertical(id="break-box") as box:
            box.border_title = "break when… (c stops where it holds)"
            box.border_subtitle = "enter sets · empty clears · escape cancels"
            yield Static(
                Content.assemble(
                    ("A Python expression, evaluated at each call in the call's frame; also ", palette.LABEL),
                    ("cos", palette.EMPHASIS),
                    (" (min, mean, max), ", palette.LABEL),
                    ("args", palette.EMPHASIS),
                    (", ", palette.LABEL),
                    ("step", palette.EMPHASIS),
                    (" and ", palette.LABEL),
                    ("result", palette.EMPHASIS),
                    (" (the similarity).", palette.LABEL),
                ),
                id="break-help",
            )
            yield Input(value=self.condition, placeholder="cos.mean > 0.999", id="break-input")
            yield Static("", id="break-error")
            yield Static(Content.styled(EXAMPLES, palette.LABEL), id="break-examples")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        condition = event.value.strip()
        problem = compile_problem(condition)
        error = self.query_one("#break-error", Static)
        error.update(Content.styled(problem, palette.CAUTION) if problem else "")
        error.display = problem is not None
        if problem is None:
            self.dismiss(condition)

    def action_cancel(self) -> None:
        self.dismiss(None)
