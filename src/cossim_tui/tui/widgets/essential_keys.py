"""The two keys a user must always find, at the right end of the footer: ``? Help`` and ``q Quit``.

Textual's footer lists the keys in order and cuts what does not fit the width: at 80 columns
it ended at "g Plot e", and a new user could not see how to leave. These two are drawn here,
beside the footer rather than in it, so that no terminal width hides them.
"""

from __future__ import annotations

from textual import events
from textual.app import RenderResult
from textual.content import Content
from textual.widget import Widget

KEYS = (("?", "question_mark", "Help"), ("q", "q", "Quit"))
"""What is shown, the key it stands for (as the app's bindings name it), and what it does."""


class EssentialKeys(Widget):
    """``? Help q Quit`` in the footer's colours; a click presses the key, as in the footer."""

    DEFAULT_CSS = """
    EssentialKeys {
        width: auto;
        height: 1;
        background: $footer-background;
    }
    """

    def render(self) -> RenderResult:
        return Content.assemble(
            *(
                part
                for shown, _, description in KEYS
                for part in (
                    (shown, "bold $footer-key-foreground on $footer-key-background"),
                    (f" {description} ", "$footer-description-foreground on $footer-description-background"),
                )
            )
        )

    def on_click(self, event: events.Click) -> None:
        x = 0
        for shown, key, description in KEYS:
            x += len(shown) + len(description) + 2
            if event.x < x:
                self.app.simulate_key(key)
                return
