"""The images the two vectors were made from, side by side (``i``).

An identical pair of images — the same batch fed twice, a second "view" that is not one —
is visible here at a glance. The pictures are the agent's thumbnails of the first image of
each module call's input batch; this screen only lays them out with what made them.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Static

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.format import fmt_shape
from cossim_tui.tui.screens.view import InspectorView
from cossim_tui.tui.widgets.thumbnail_view import ThumbnailView


def has_input_images(step: protocol.StepCaptured | None) -> bool:
    return step is not None and any(arg.input_image is not None for arg in step.args)


def describe_source(arg: protocol.TensorSummary) -> Content:
    """``made by SmallCNN #0 at step 0`` / ``from (2, 3, 40, 32), colour, image 0``: where the picture comes from."""
    made, picture = arg.made_by, arg.input_image
    if made is None or picture is None:
        return Content.styled("no input image: not made by a module from an image batch still alive", palette.LABEL)
    colour = "grey" if picture.channels == 1 else "colour"
    return Content.assemble(
        ("made by ", palette.LABEL),
        f"{made.module} #{made.call}",
        (" at step ", palette.LABEL),
        str(made.step),
        ("\nfrom ", palette.LABEL),
        fmt_shape(picture.source_shape),
        (f", {colour}, image 0", palette.LABEL),
    )


class InputsScreen(InspectorView[None]):
    """The input image of each argument of ``step``; ``i`` or escape closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("i", "close", "Close"),
    ]

    def __init__(self, step: protocol.StepCaptured) -> None:
        super().__init__()
        self.step = step

    def compose(self) -> ComposeResult:
        with Vertical(id="inputs-box") as box:
            box.border_title = Content(f"inputs of step {self.step.step} at {self.step.site.label}")
            box.border_subtitle = "i or escape closes"
            with Horizontal(id="inputs-pair"):
                for index, arg in enumerate(self.step.args[:2]):
                    with Vertical(classes="input-side", id=f"input-{index}"):
                        yield Static(Content.styled(arg.expr, palette.EMPHASIS), classes="input-expr")
                        if arg.input_image is not None:
                            yield ThumbnailView(arg.input_image, classes="input-picture")
                        yield Static(describe_source(arg), classes="input-source")

    def action_close(self) -> None:
        self.dismiss(None)
