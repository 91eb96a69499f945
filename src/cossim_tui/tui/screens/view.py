"""A view over the inspector (help, findings so far, input images) that never traps its keys.

A new user who opened a view and pressed ``q``, ``g`` or ``f`` found them swallowed: a modal
screen only hears its own bindings. Here a key the view does not use itself is looked up among
the inspector's: saving a screenshot, quitting and Ctrl-C do their job over the view, which
stays open (the screenshot shows it); any other inspector key closes the view first, then does
what it does on the inspector's screen.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")

KEPT_OPEN = frozenset({"s", "q", "ctrl+c"})
"""Inspector keys that act with the view left open."""


class InspectorView(ModalScreen[ResultType]):
    """A modal view whose unused keys reach the inspector; dismissed with ``None`` when one closes it."""

    KEPT_OPEN: ClassVar[frozenset[str]] = KEPT_OPEN

    def on_key(self, event: events.Key) -> None:
        if event.key in self.active_bindings:
            return  # the view, or the widget in it with the focus, uses this key
        action = self._inspector_action(event.key)
        if action is None:
            return
        event.stop()
        event.prevent_default()
        if event.key not in self.KEPT_OPEN:
            self.dismiss(None)
        # After the view is gone, so that the key acts on the inspector's screen.
        self.app.call_later(self._run_first, self.app, action)

    def _inspector_action(self, key: str) -> list[str] | None:
        """The inspector's actions bound to ``key``, in its order (the first it allows runs)."""
        actions = [
            binding.action
            for binding in self.app.BINDINGS
            if isinstance(binding, Binding) and key in binding.key.split(",")
        ]
        return actions or None

    @staticmethod
    async def _run_first(app: App[object], actions: list[str]) -> None:
        for action in actions:
            if await app.run_action(action):
                return
