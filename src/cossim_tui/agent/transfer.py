"""Brings everything one captured call computed next to the tensors to the host at once.

On a GPU every read of a device value (``.item()``, ``float()``, ``.tolist()``) is a
device→host copy that waits for the device; a step that made a dozen of them would cost a
dozen round trips. So capture, evidence, provenance and the training context each *queue*
the device values they need here, as 0-d or 1-D tensors of any real dtype, and read them
back after one ``fetch()``: one ``cat`` and one ``tolist()`` per device (one in practice).
A part can also come back as a host tensor (``copy``): the values of small arguments on a
device travel that way, to be summarised on the CPU without another wait.
"""

from __future__ import annotations

from typing import Any

import torch


class HostTransfer:
    def __init__(self) -> None:
        self._parts: list[torch.Tensor] = []
        self._sizes: list[int] = []
        self._values: list[list[float]] | None = None
        self._copies: dict[int, torch.Tensor | None] = {}
        """Slots that come back as host tensors rather than lists (``copy``)."""

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

    def copy(self, tensor: torch.Tensor) -> int:
        """Queue a tensor whose values come back as a 1-D host tensor (``host``), in the dtype
        its part of the transfer was promoted to: exact for any real floating dtype."""
        slot = self.vector(tensor)
        self._copies[slot] = None
        return slot

    def fetch(self) -> None:
        """One transfer per device holding queued values (``cat`` promotes mixed dtypes exactly)."""
        parts, sizes, copies = self._parts, self._sizes, self._copies
        values: list[list[float]] = [[] for _ in parts]
        by_device: dict[Any, list[int]] = {}
        for index, part in enumerate(parts):
            by_device.setdefault(part.device, []).append(index)
        for indices in by_device.values():
            joined = torch.cat([parts[i] for i in indices]) if len(indices) > 1 else parts[indices[0]]
            if copies and any(i in copies for i in indices):
                host = joined.cpu()  # the one wait; the rest is read from host memory
                position = 0
                for i in indices:
                    size = sizes[i]
                    if i in copies:
                        copies[i] = host[position : position + size]
                    else:
                        values[i] = host[position : position + size].tolist()
                    position += size
                continue
            flat = joined.tolist()
            position = 0
            for i in indices:
                size = sizes[i]
                values[i] = flat[position : position + size]
                position += size
        self._values = values
        self._parts = []

    def host(self, slot: int) -> torch.Tensor:
        """A ``copy``'s values, on the host, after ``fetch``."""
        copied = self._copies[slot]
        assert copied is not None, "fetch() first"
        return copied

    def __getitem__(self, slot: int) -> list[float]:
        assert self._values is not None, "fetch() first"
        return self._values[slot]
