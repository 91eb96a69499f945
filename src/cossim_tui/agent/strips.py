"""The values behind each argument's heat strip: its first vector, evenly sampled down.

Two identical vectors must give identical strips and an all-zero vector a dead one, so the
values are real elements of the vector (every k-th one), not averages that would smooth a
difference away. Both arguments' values come to the host with the step's other values, in its
one transfer. Nothing here keeps
a reference to a tensor or raises into the script.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cossim_tui.agent.tensors import reduced_dim
from cossim_tui.agent.transfer import HostTransfer

STRIP = 48
"""Values per strip, at most."""


def _first_vector(x: Any, dim: int, ndim: int) -> torch.Tensor | None:
    if not isinstance(x, torch.Tensor) or x.layout != torch.strided or x.is_meta or x.numel() == 0:
        return None
    d = reduced_dim(dim, ndim)
    if x.dim() == 0 or -d > x.dim():
        return x.detach().reshape(-1)[:1]
    moved = x.detach().movedim(d, -1)
    return moved.reshape(-1, moved.shape[-1])[0]


def value_strips(x1: Any, x2: Any, dim: int, length: int = STRIP) -> list[list[float]]:
    """``[strip of x1, strip of x2]``; an empty list for an argument without values."""
    transfer = HostTransfer()
    finish = queue_value_strips(x1, x2, dim, transfer, length)
    transfer.fetch()
    return finish()


def queue_value_strips(
    x1: Any, x2: Any, dim: int, transfer: HostTransfer, length: int = STRIP
) -> Callable[[], list[list[float]]]:
    """``value_strips`` with the values queued on ``transfer`` (the step's one device→host
    transfer): call what it returns once the transfer has been fetched."""
    try:
        with torch.no_grad():
            ndim = max((x.dim() for x in (x1, x2) if isinstance(x, torch.Tensor)), default=0)
            if not -max(ndim, 1) <= dim < max(ndim, 1):
                return lambda: [[], []]
            vectors = [_first_vector(x, dim, ndim) for x in (x1, x2)]
            parts: list[torch.Tensor] = []
            sizes: list[int] = []
            for vector in vectors:
                if vector is None:
                    sizes.append(0)
                    continue
                if vector.is_complex():
                    vector = vector.abs()
                if vector.numel() > length:
                    index = torch.linspace(0, vector.numel() - 1, length, device=vector.device).round().long()
                    vector = vector.index_select(0, index)
                parts.append(vector.to(device=parts[0].device if parts else vector.device, dtype=torch.float32))
                sizes.append(vector.numel())
            slot = transfer.vector(torch.cat(parts)) if parts else None
    except Exception:  # noqa: BLE001 - a strip is a picture: never worth breaking the script
        return lambda: [[], []]

    def finish() -> list[list[float]]:
        values = transfer[slot] if slot is not None else []
        out, position = [], 0
        for size in sizes:
            out.append(values[position : position + size])
            position += size
        return out

    return finish
