"""Textual's footer, showing only the keys that fit whole.

The footer lists the keys in order and cuts the one that reaches its right edge: at 80
columns it ended in "b B", half a key beside ``? Help``. Here a key that does not fit whole
is not shown, nor any after it, so the keys shown keep their order; the help (``?``) lists
them all.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Footer


class FittingFooter(Footer):
    """``Footer`` whose keys are shown from the left while they fit whole."""

    async def recompose(self) -> None:
        await super().recompose()
        self.call_after_refresh(self._fit)

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        room = self.content_size.width
        used = 0
        fits = True
        for child in self.children:
            margin = child.styles.margin
            width = child.get_content_width(self.size, self.app.size) + child.styles.gutter.width
            fits = fits and used + margin.left + width <= room
            used += margin.left + width + margin.right
            child.display = fits
