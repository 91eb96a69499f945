"""One input image, drawn with half blocks: two pixels per cell, so a 24×24 picture takes 24×12.

Each cell is ``▀`` with the upper pixel as its colour and the lower pixel as its background.
It only draws what the agent sent (``protocol.Thumbnail``); no pixel is computed here.
"""

from __future__ import annotations

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from cossim_tui import protocol

UPPER_HALF = "▀"


def _color(pixel: list[int]) -> Color:
    r, g, b = (max(0, min(255, int(v))) for v in (list(pixel) + [0, 0, 0])[:3])
    return Color.from_rgb(r, g, b)


def half_block_rows(picture: protocol.Thumbnail) -> list[list[Segment]]:
    """The picture as rows of ``▀`` cells, two pixel rows per cell row (the last one may be alone)."""
    rows = picture.rows
    lines = []
    for top in range(0, len(rows), 2):
        upper = rows[top]
        lower = rows[top + 1] if top + 1 < len(rows) else None
        segments = []
        for x, pixel in enumerate(upper):
            below = lower[x] if lower is not None and x < len(lower) else None
            style = Style(color=_color(pixel), bgcolor=_color(below) if below is not None else None)
            segments.append(Segment(UPPER_HALF, style))
        lines.append(segments)
    return lines


class ThumbnailView(Widget):
    """Draws one ``protocol.Thumbnail``, as large as the picture (width × ⌈height / 2⌉ cells)."""

    DEFAULT_CSS = """
    ThumbnailView {
        width: auto;
        height: auto;
    }
    """

    def __init__(self, picture: protocol.Thumbnail, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.picture = picture
        self._lines = [Strip(segments) for segments in half_block_rows(picture)]

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return max((strip.cell_length for strip in self._lines), default=0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines)

    def render_line(self, y: int) -> Strip:
        if 0 <= y < len(self._lines):
            return self._lines[y].crop(0, self.size.width)
        return Strip.blank(self.size.width)
