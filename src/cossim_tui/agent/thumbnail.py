"""A small picture of the image batch a module was fed, so the user can see the two inputs.

Taken only at an intercepted call, from the module call's input that ``provenance`` holds
weakly, and only while the script still holds that input. The first image of the batch is
downsampled (area averaging, aspect kept) to at most ``SIZE`` pixels a side and scaled to
0–255 by its own minimum and maximum, so two equal images give equal thumbnails. Nothing of
the script's tensors is changed: everything is read under ``no_grad`` from a detached copy.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import Thumbnail

SIZE = 24
KEEP = 16
"""Thumbnails kept per module call: a vector recycled over a few steps is drawn once."""


def is_image_batch(x: Any) -> bool:
    """A 4-D floating-point tensor with 1 or 3 channels: ``(N, C, H, W)``."""
    return (
        isinstance(x, torch.Tensor)
        and x.dim() == 4
        and x.is_floating_point()
        and x.shape[1] in (1, 3)
        and x.shape[0] > 0
        and x.shape[2] > 0
        and x.shape[3] > 0
        and x.layout == torch.strided
        and not x.is_meta
    )


def thumbnail(batch: torch.Tensor, size: int = SIZE) -> Thumbnail | None:
    """The first image of ``batch``, at most ``size`` pixels a side; ``None`` if it is not an image batch."""
    transfer = HostTransfer()
    finish = queue_thumbnail(batch, transfer, size)
    transfer.fetch()
    return finish()


def queue_thumbnail(batch: torch.Tensor, transfer: HostTransfer, size: int = SIZE) -> Callable[[], Thumbnail | None]:
    """``thumbnail`` computed where the batch lives, its pixels queued on ``transfer`` (the step's
    one device→host transfer): call what it returns once the transfer has been fetched."""
    if not is_image_batch(batch):
        return lambda: None
    with torch.no_grad():
        image = batch[:1].detach().to(dtype=torch.float32)
        height, width = image.shape[2], image.shape[3]
        scale = min(1.0, size / max(height, width))
        target = (max(1, math.floor(height * scale)), max(1, math.floor(width * scale)))
        if target != (height, width):
            image = torch.nn.functional.interpolate(image, size=target, mode="area")
        image = torch.nan_to_num(image[0], nan=0.0, posinf=0.0, neginf=0.0)
        low, high = image.min(), image.max()
        span = high - low
        # A flat image is mid-grey; decided on the device, so nothing is read back here.
        image = torch.where(span > 0, (image - low) / torch.where(span > 0, span, 1.0), 0.5)
        pixels = (image * 255).round().clamp(0, 255).to(torch.uint8)
        if pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1)
        slot = transfer.vector(pixels.permute(1, 2, 0))
    channels, source_shape = int(batch.shape[1]), list(batch.shape)

    def finish() -> Thumbnail:
        values = [int(v) for v in transfer[slot]]
        rows = [
            [values[(row * target[1] + column) * 3 : (row * target[1] + column) * 3 + 3] for column in range(target[1])]
            for row in range(target[0])
        ]
        return Thumbnail(width=target[1], height=target[0], channels=channels, source_shape=source_shape, rows=rows)

    return finish


class Thumbnails:
    """Thumbnails by module call, so each call's input is drawn at most once.

    Keyed by the call's record itself (kept, so its id is not reused): call numbers count
    per module instance, so two modules' calls can have the same number."""

    def __init__(self) -> None:
        self._by_call: OrderedDict[int, tuple[Any, Thumbnail | None]] = OrderedDict()

    def of(self, made: Any) -> Thumbnail | None:
        """The thumbnail of ``made``'s (a ``provenance.MadeBy``) input, if it is an image batch still alive."""
        transfer = HostTransfer()
        finish = self.queue(made, transfer)
        transfer.fetch()
        return finish()

    def queue(self, made: Any, transfer: HostTransfer) -> Callable[[], Thumbnail | None]:
        """``of`` with the pixels queued on ``transfer``: call what it returns after the fetch."""
        if made is None or made.input is None:
            return lambda: None
        number = id(made)
        if number in self._by_call:
            self._by_call.move_to_end(number)
            known = self._by_call[number][1]
            return lambda: known
        source = made.input()
        if source is None:
            return lambda: None
        picture = queue_thumbnail(source, transfer)

        def finish() -> Thumbnail | None:
            made_picture = picture()
            self._by_call[number] = (made, made_picture)
            while len(self._by_call) > KEEP:
                self._by_call.popitem(last=False)
            return made_picture

        return finish
