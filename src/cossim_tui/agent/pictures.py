"""Which steps get pictures, and the input images and value strips they carry.

The pictures (value strips, input thumbnails, embedding maps) cost more than the rest of a
step, so they are made where someone can see them (``AgentConfig.pictures``): every step, the
steps the script stops at and a bounded rate while it runs freely, or never. ``Pictures``
owns that pacing and the thumbnails' state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from cossim_tui import protocol
from cossim_tui.protocol import TensorSummary


class Pictures:
    def __init__(self) -> None:
        self.thumbnails: Any = None
        self._pictured_at: dict[str, float] = {}
        """Per call site, when (``time.monotonic``) its last step that got pictures while running
        freely was made: per site, so that one site's calls cannot take every turn."""

    def due(self, site: str, wanted: str, stepping: bool) -> bool:
        """Whether this step gets its pictures (``wanted``: ``AgentConfig.pictures``): with ``paced``, a step
        the script will stop at does (known here when stepping or asked to pause; a stop decided
        by a finding gets them in ``Pipeline.picture_stop``), and while it runs freely one step in each
        ``PICTURE_INTERVAL`` at each call site: the screen cannot show more, and they cost more
        than the rest."""
        if wanted == "every-step":
            return True
        if wanted == "none":
            return False
        if stepping:
            return True
        now = time.monotonic()
        if now - self._pictured_at.get(site, -math.inf) < protocol.PICTURE_INTERVAL:
            return False
        if len(self._pictured_at) >= 4096:  # sites made on the fly: start again
            self._pictured_at.clear()
        self._pictured_at[site] = now
        return True

    def queue_images(self, made: list[Any], transfer: Any) -> list[Callable[[], protocol.Thumbnail | None]]:
        """Queue the pictures of both arguments' input images on ``transfer`` (they live where the
        script's batch does, so they travel with the call's one transfer)."""
        return [self.queue_input_image(made_one, transfer) for made_one in made]

    @staticmethod
    def put(
        summaries: list[TensorSummary], images: list[Callable[[], protocol.Thumbnail | None]], strips: Callable[[], list[list[float]]]
    ) -> None:
        """Put the fetched input images and value strips on the summaries."""
        for summary, image, strip in zip(summaries, images, strips()):
            summary.input_image = image()
            summary.strip = strip

    def queue_input_image(self, made: Any, transfer: Any) -> Callable[[], protocol.Thumbnail | None]:
        """The picture of the image ``made``'s module was fed, its pixels queued on ``transfer``."""
        if made is None:
            return lambda: None
        try:
            if self.thumbnails is None:
                from cossim_tui.agent.thumbnail import Thumbnails

                self.thumbnails = Thumbnails()
            finish = self.thumbnails.queue(made, transfer)
        except Exception:  # noqa: BLE001 - the step is still worth showing without the picture
            return lambda: None

        def picture() -> protocol.Thumbnail | None:
            try:
                return finish()
            except Exception:  # noqa: BLE001 - as above
                return None

        return picture
