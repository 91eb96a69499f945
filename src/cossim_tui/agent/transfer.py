"""Brings everything one captured call computed next to the tensors to the host at once.

On a GPU every read of a device value (``.item()``, ``float()``, ``.tolist()``) is a
device→host copy that waits for the device; a step that made a dozen of them would cost a
dozen round trips. So capture, evidence, provenance and the training context each *queue*
the device values they need here, as 0-d or 1-D tensors of any real dtype, and read them
back after one ``fetch()``: one ``cat`` and one ``tolist()`` per device (one in practice).
A part can also come back as a host tensor (``copy``): the values of small arguments on a
device travel that way, to be summarised on the CPU without another wait.

On a CUDA device the transfer can also be started without waiting at all (``start``): the
values are copied into pinned host memory behind the work the device has queued, an event
marks where, and ``fetch()`` later waits for it, asleep and without holding the GIL.
"""

from __future__ import annotations

from typing import Any

import torch


def runs_behind(device: torch.device) -> bool:
    """Whether a transfer from ``device`` can be started without waiting for it (``start``): a
    CUDA device, outside a CUDA graph capture (where values do not exist yet, and nothing may
    wait for the device)."""
    return device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


class HostTransfer:
    def __init__(self) -> None:
        # Lists once something is queued: many transfers carry nothing (a parked call's, where
        # its values travel in its copy), and an empty tuple is nothing for the garbage collector.
        self._parts: list[torch.Tensor] | tuple[()] = ()
        self._sizes: list[int] | tuple[()] = ()
        self._values: list[list[float]] | None = None
        self._copies: dict[int, torch.Tensor | None] = {}
        """Slots that come back as host tensors rather than lists (``copy``)."""
        self._given: dict[int, list[float]] = {}
        """Slots whose values were on the host already (``given``)."""
        self._started: list[tuple[list[int], torch.Tensor, Any, torch.device]] | None = None
        """After ``start``: per device, its slots, their host tensor (maybe still being written),
        the event that marks the end of the copy (``None``: written already) and the device."""

    def scalars(self, *values: torch.Tensor) -> int:
        """Queue 0-d tensors (one device); their values come back as one list, in order."""
        return self.vector(torch.stack(values))

    def vector(self, tensor: torch.Tensor) -> int:
        """Queue a tensor's values, flattened."""
        flat = tensor if tensor.dim() == 1 else tensor.reshape(-1)
        if flat.is_complex():
            flat = flat.abs()
        return self._slot(flat, flat.shape[0])

    def given(self, values: list[float]) -> int:
        """A slot for values already on the host: a call's share of figures fetched once for a
        batch of calls (``batch``), read back like the rest."""
        slot = self._slot(None, len(values))
        self._given[slot] = values
        return slot

    def _slot(self, part: torch.Tensor | None, size: int) -> int:
        """The next slot: ``part`` to transfer (``None``: given on the host) of ``size`` values."""
        if not self._sizes:
            self._parts, self._sizes = [], []
        self._parts.append(part)  # type: ignore[arg-type]
        self._sizes.append(size)
        return len(self._sizes) - 1

    def copy(self, tensor: torch.Tensor) -> int:
        """Queue a tensor whose values come back as a 1-D host tensor (``host``), in the dtype
        its part of the transfer was promoted to: exact for any real floating dtype."""
        slot = self.vector(tensor)
        self._copies[slot] = None
        return slot

    def _by_device(self) -> list[list[int]]:
        by_device: dict[Any, list[int]] = {}
        for index, part in enumerate(self._parts):
            if part is None:  # (given: on the host already)
                continue
            by_device.setdefault(part.device, []).append(index)
        return list(by_device.values())

    def _joined(self, indices: list[int]) -> torch.Tensor:
        parts = self._parts
        return torch.cat([parts[i] for i in indices]) if len(indices) > 1 else parts[indices[0]]

    def start(self) -> None:
        """Begin the transfer and return at once: from a CUDA device, into pinned host memory
        behind the work queued there (the values are those the tensors hold at this
        point of the device's stream, whatever the script does to them next); from any other,
        now. ``fetch()`` then finishes it."""
        if not self._sizes:
            return  # nothing queued: nothing to start
        started = []
        for indices in self._by_device():
            joined = self._joined(indices)
            event = None
            if joined.is_cuda:
                host = joined.to("cpu", non_blocking=True)  # into pinned memory: nothing waits
                event = torch.cuda.Event(blocking=True)  # whoever waits for it sleeps, not spins
                event.record(torch.cuda.current_stream(joined.device))
            elif joined.is_cpu:
                host = joined.clone() if len(indices) == 1 else joined  # (a cat is a copy already)
            else:
                host = joined.cpu()
            started.append((indices, host, event, joined.device))
        self._started = started
        self._parts = []

    def fetch(self) -> None:
        """One transfer per device holding queued values (``cat`` promotes mixed dtypes exactly);
        after ``start``, the wait for what it started."""
        values: list[list[float]] = [[] for _ in self._sizes]
        if self._started is not None:
            for indices, host, event, device in self._started:
                if event is not None:
                    with torch.cuda.device(device):  # (on another thread: not device 0's context)
                        event.synchronize()
                self._distribute(indices, host, values)
            self._started = None
            self._values = self._with_given(values)
            return
        copies = self._copies
        for indices in self._by_device():
            joined = self._joined(indices)
            if copies and any(i in copies for i in indices):
                self._distribute(indices, joined.cpu(), values)  # the one wait; the rest is read from host memory
                continue
            flat = joined.tolist()
            position = 0
            for i in indices:
                size = self._sizes[i]
                values[i] = flat[position : position + size]
                position += size
        self._values = self._with_given(values)
        self._parts = []

    def _with_given(self, values: list[list[float]]) -> list[list[float]]:
        for slot, given in self._given.items():
            values[slot] = given
        return values

    def _distribute(self, indices: list[int], host: torch.Tensor, values: list[list[float]]) -> None:
        """Hand each slot its part of ``host``: a copy as a host tensor, the rest as lists."""
        position = 0
        for i in indices:
            size = self._sizes[i]
            if i in self._copies:
                self._copies[i] = host[position : position + size]
            else:
                values[i] = host[position : position + size].tolist()
            position += size

    def host(self, slot: int) -> torch.Tensor:
        """A ``copy``'s values, on the host, after ``fetch``."""
        copied = self._copies[slot]
        assert copied is not None, "fetch() first"
        return copied

    def __getitem__(self, slot: int) -> list[float]:
        assert self._values is not None, "fetch() first"
        return self._values[slot]
