"""Brings everything one captured call computed next to the tensors to the host at once.

On a GPU every read of a device value (``.item()``, ``float()``, ``.tolist()``) is a
device→host copy that waits for the device; a step that made a dozen of them would cost a
dozen round trips. So capture, evidence, provenance and the training context each *queue*
the device values they need here, as 0-d or 1-D tensors of any real dtype, and read them
back after one ``fetch()``: one ``cat`` and one ``tolist()`` per device (one in practice).
"""

from __future__ import annotations

from typing import Any

import torch


class HostTransfer:
    def __init__(self) -> None:
        self._parts: list[torch.Tensor] = []
        self._sizes: list[int] = []
        self._values: list[list[float]] | None = None

    def scalars(self, *values: torch.Tensor) -> int:
        """Queue 0-d tensors (one device); their values come back as one list, in order."""
        return self.vector(torch.stack(values))

    def vector(self, tensor: torch.Tensor) -> int:
        """Queue a tensor's values, flattened."""
        flat = tensor if tensor.dim() == 1 else tensor.reshape(-1)
        if flat.is_complex():
            flat = flat.abs()
        self._parts.append(flat)
        self._sizes.append(flat.shape[0])
        return len(self._parts) - 1

    def fetch(self) -> None:
        """One transfer per device holding queued values (``cat`` promotes mixed dtypes exactly)."""
        parts, sizes = self._parts, self._sizes
        values: list[list[float]] = [[] for _ in parts]
        by_device: dict[Any, list[int]] = {}
        for index, part in enumerate(parts):
            by_device.setdefault(part.device, []).append(index)
        for indices in by_device.values():
            flat = (torch.cat([parts[i] for i in indices]) if len(indices) > 1 else parts[indices[0]]).tolist()
            position = 0
            for i in indices:
                size = sizes[i]
                values[i] = flat[position : position + size]
                position += size
        self._values = values
        self._parts = []

    def __getitem__(self, slot: int) -> list[float]:
        assert self._values is not None, "fetch() first"
        return self._values[slot]
