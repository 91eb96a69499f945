"""One argument of a cosine call, summarised where it lives.

Statistics are computed on the tensor's own device with a few fused reductions (the sum, then
the norm of the deviations from the mean; amin/amax; row norms) and queued on a
``HostTransfer``, which the caller fetches once for the whole call; the host finishes them
(divisions, and the min/mean/max of a few rows' norms), since on a small tensor each device
op costs more than its arithmetic. Only when the first pass shows a NaN, an infinity or an
overflow does a second pass count them and redo the statistics over the finite values.
Arguments of more than ``SAMPLE_LIMIT`` elements are summarised from evenly spaced rows so
that time and memory stay bounded. ``capture`` makes the pair of them.

Nothing here keeps a reference to a tensor, and nothing here can raise into the script: an
argument that cannot be summarised (sparse, meta, not a tensor) gets a ``note`` instead.
"""

from __future__ import annotations

import array
import functools
import math
from dataclasses import dataclass
from typing import Any

import msgspec
import torch

from cossim_tui.agent.tensors import as_rows
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import Spread, StorageInfo, TensorSummary, ValueStats

PREVIEW = 6
FIRST_ROWS = 8
SAMPLE_LIMIT = 1 << 18
"""Above this many elements an argument is summarised from evenly spaced rows, at most this many
elements of them (``sampled``): reading every element of a large tensor several times would cost
more than the cosine call itself. Whether the two arguments are equal, and by how much they
differ, is always decided on every element."""
SMALL = 1 << 15
"""Up to this many elements a tensor is summarised in float64 (cheap, and nothing overflows)."""
COS_ON_HOST = 64
"""A similarity with at most this many values is fetched whole and summarised on the host."""
ONE_PASS = 256
"""Up to this many values an argument's mean and std are ``std_mean``'s one op; above, two passes
(the sum, then the norm of the deviations from the mean), which are as stable as its Welford
update and faster from a few hundred values: on the CPU (one thread), 6 against 9 µs for two
arguments of 512 values, 10 against 48 at 4,096, 150 against 1,470 for 128 of 2,048 (a batch of
parked calls, ``batch``)."""
NORMS_ON_HOST = 64
"""So are the norms of an argument of at most this many rows: three reductions fewer on the device."""
SAMPLE = 64
"""Evenly spaced values of each argument, in the order of its rows, fetched with its preview:
``evidence`` fingerprints an argument by them (and by its statistics)."""


def _sample(rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
    keep = max(1, SAMPLE_LIMIT // max(rows.shape[1], 1))
    if rows.numel() <= SAMPLE_LIMIT or rows.shape[0] <= keep:
        return rows, False
    index = torch.linspace(0, rows.shape[0] - 1, keep, device=rows.device).long()
    return rows.index_select(0, index), True


def working_dtype(x: torch.Tensor, numel: int) -> torch.dtype:
    if x.dtype in (torch.float64, torch.complex128) or numel <= SMALL:
        return torch.float64
    return torch.float32


class ArgValues:
    """One argument's values as contiguous (rows, d) in the working dtype, and the rows' norms
    as (rows, 1).

    Made once per argument; ``evidence`` reuses them rather than reading the tensor again. When
    capture stacked both arguments, they are taken out of the stack only if someone asks.
    """

    __slots__ = (
        "_stack", "_index", "_values", "_norms", "rows", "width", "dtype", "sampled", "stats_at", "preview_at", "sample_at", "sample_key",
        "_first_pass",
    )

    def __init__(
        self, values: torch.Tensor, norms: torch.Tensor, sampled: bool, stats_at: tuple[int, int], index: int | None = None
    ) -> None:
        if index is None:
            self._stack, self._values, self._norms = None, values, norms
        else:
            self._stack, self._values, self._norms = (values, norms), None, None
        self._index = index
        self.rows, self.width, self.dtype = values.shape[-2], values.shape[-1], values.dtype
        self.sampled = sampled
        self.stats_at = stats_at
        """(slot, offset) where ``stats_of``'s figures for this argument come back on the transfer."""
        slot, offset = stats_at
        preview, count = min(PREVIEW, self.width), self.rows * self.width
        self.preview_at = (slot, offset + stats_width(self.rows), preview)
        """(slot, offset, count) of the preview."""
        self.sample_at: tuple[int, int, int] | None = (slot, offset + stats_width(self.rows) + preview, min(count, SAMPLE))
        """(slot, offset, count) of ``SAMPLE`` evenly spaced values (all of them when fewer);
        ``None`` where they came as ``sample_key`` instead."""
        self.sample_key: bytes | None = None
        """Those values already as a fingerprint holds them (``sample_key``), where a batch of
        calls made them (``batch.Share.samples``) and they are not on the transfer."""
        self._first_pass: list[float] | None = None

    @property
    def values(self) -> torch.Tensor:
        if self._values is None:
            self._values = self._stack[0][self._index]  # type: ignore[index]
        return self._values

    @property
    def norms(self) -> torch.Tensor:
        if self._norms is None:
            self._norms = self._stack[1][self._index]  # type: ignore[index]
        return self._norms

    def first_pass(self, transfer: HostTransfer) -> list[float]:
        """mean, std, min, max, min/mean/max norm, as fetched (the host does what is left)."""
        if self._first_pass is None:
            slot, offset = self.stats_at
            fetched, rows = transfer[slot], self.rows
            mean, std, low, high = fetched[offset : offset + 4]
            if rows <= NORMS_ON_HOST:
                norms = fetched[offset + 4 : offset + 4 + rows]
                nmin, nmean, nmax = min(norms), sum(norms) / rows, max(norms)
                if nmean != nmean:  # a NaN norm: min and max say nothing either
                    nmin = nmax = nmean
            else:
                nmin, nsum, nmax = fetched[offset + 4 : offset + 7]
                nmean = nsum / rows
            count = rows * self.width
            if count > ONE_PASS:  # the sum and the norm of the deviations (see stats_of)
                mean, std = mean / count, std / math.sqrt(count - 1)
            self._first_pass = [mean, std, low, high, nmin, nmean, nmax]
        return self._first_pass


def sample_key(values: list[float]) -> bytes:
    """A fingerprint's sampled values as its key holds them: their float64 bytes, compared and
    hashed at once (and bit for bit: a NaN equals the same NaN, as in a copy of it)."""
    return array.array("d", values).tobytes()


def stats_width(rows: int) -> int:
    """How many figures ``stats_of`` queues per argument before its preview."""
    return 4 + (rows if rows <= NORMS_ON_HOST else 3)


@functools.lru_cache(maxsize=64)
def _picks(k: int, count: int, preview: int, device: Any) -> torch.Tensor:
    """Where the preview (the first values) and the sample are in each of k contiguous arguments
    of ``count`` values: picked by one ``take``, whose result is contiguous (a ``cat`` of strided
    pieces copies them one by one). Made on the host once per size, never read back."""
    step = max(1, count // SAMPLE)
    positions = list(range(preview)) + list(range(0, min(count, step * SAMPLE), step))  # min(count, SAMPLE) of them
    return torch.tensor([a * count + p for a in range(k) for p in positions], dtype=torch.int64, device=device)


@dataclass(slots=True)
class PendingSummary:
    """What one argument's first pass queued on the transfer."""

    summary: TensorSummary
    """The summary, its values' figures filled in by ``finish_stats``."""
    arg: ArgValues | None = None


def _storage(x: torch.Tensor) -> tuple[int, int, tuple[int, ...], int, tuple[int, int]] | None:
    """``StorageInfo``'s fields, as atomic values."""
    if x.layout != torch.strided or x.is_meta:
        return None
    try:
        start_address = x.data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    size, offset, strides = x.element_size(), x.storage_offset(), x.stride()
    ptr = start_address - offset * size  # where the storage starts
    low = high = 0
    for extent, stride in zip(x.shape, strides):
        if extent == 0:
            return ptr, offset, strides, size, (start_address, start_address)
        if stride >= 0:
            high += (extent - 1) * stride
        else:
            low += (extent - 1) * stride
    return ptr, offset, strides, size, (start_address + low * size, start_address + (high + 1) * size)


_NAMES: dict[Any, str] = {}


def _name(value: Any) -> str:
    """``float32`` for ``torch.float32``, ``strided`` for ``torch.strided`` (cached: str() is slow)."""
    name = _NAMES.get(value)
    if name is None:
        name = _NAMES[value] = str(value).removeprefix("torch.")
    return name


class Described(msgspec.Struct, frozen=True, gc=False):
    """What a summary reads from a tensor itself rather than from its values (shape, dtype,
    autograd, storage), as it was when read: ``capture.describe_pair`` reads it at the call for
    a pair summarised later. Only atomic values and tuples of them: the garbage collector never
    tracks it, so the calls waiting to be summarised together (``batch``) do not fill its older
    generations, whose full collections a training process pays for all its objects."""

    shape: tuple[int, ...]
    dtype: str
    device: str
    layout: str
    numel: int
    requires_grad: bool
    grad_fn: str | None
    is_leaf: bool
    storage: tuple[int, int, tuple[int, ...], int, tuple[int, int]] | None


def described_now(x: torch.Tensor) -> Described:
    grad_fn = x.grad_fn
    return Described(
        tuple(x.shape), _name(x.dtype), _name(x.device), _name(x.layout), x.numel(), x.requires_grad,
        type(grad_fn).__name__ if grad_fn is not None else None, x.is_leaf, _storage(x),
    )


def describe(x: Any, expr: str, seen: Described | None = None) -> TensorSummary:
    """A summary with the fields that are not read from the values (from ``seen`` where it was
    read earlier, else from ``x`` now); the values' figures are filled in by ``finish_stats``."""
    if not isinstance(x, torch.Tensor):
        return TensorSummary(
            expr=expr, shape=[], dtype=type(x).__name__, device="-", layout="-", numel=0,
            requires_grad=False, grad_fn=None, is_leaf=True, norm=None, rows=0, stats=None,
            nan=0, inf=0, preview=[], storage=None, note=f"not a tensor ({type(x).__name__})",
        )
    if seen is None:
        seen = described_now(x)
    storage = seen.storage
    # Positionally, in the record's order (twice as fast as by keyword, at every argument):
    # expr, shape, dtype, device, layout, numel, requires_grad, grad_fn, is_leaf, norm, rows,
    # stats, nan, inf, preview, storage.
    return TensorSummary(
        expr, list(seen.shape), seen.dtype, seen.device, seen.layout, seen.numel, seen.requires_grad, seen.grad_fn,
        seen.is_leaf, None, 0, None, 0, 0, [],
        StorageInfo(storage[0], storage[1], list(storage[2]), storage[3], list(storage[4])) if storage is not None else None,
    )


def summarisable(x: Any, described: TensorSummary) -> bool:
    """Whether ``x`` has values to summarise; if not, ``described`` gets a note saying why."""
    if described.note:
        return False
    if x.layout != torch.strided:
        described.note = f"{described.layout} tensor: values not summarised"
    elif x.is_meta:
        described.note = "meta tensor: it has no values"
    elif x.numel() == 0:
        described.note = "empty tensor"
    else:
        return True
    return False


def _values(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, bool]:
    """The argument as contiguous (rows, d) in its working dtype, sampled if huge."""
    data = x.detach()
    if data.is_complex():
        data = data.abs()
    rows, sampled = _sample(as_rows(data, dim))
    # Contiguous, so that equal values always reduce in the same order (evidence fingerprints them).
    values = rows.to(working_dtype(x, rows.numel()))
    if not values.is_contiguous():
        values = values.contiguous()
    return values, sampled


def stats_of(values: torch.Tensor, norms: torch.Tensor, preview: int) -> torch.Tensor:
    """Of each of a stack of k (rows, d) values and their (k, rows, 1) norms, (k, 1, m): the mean
    and std (up to ``ONE_PASS`` values; above, the sum and the norm of the deviations from the
    mean), min, max, the norms (their min, sum and max above ``NORMS_ON_HOST`` rows), and the
    first ``preview`` values. ``ArgValues.first_pass`` divides and summarises on the host: exact
    there, and no device op.

    One argument or two stacked, the reductions are the same, so equal values always give
    bit-equal figures (evidence compares them across steps)."""
    k, rows, width = values.shape
    count = rows * width
    flat = values.view(k, 1, count)
    if count <= ONE_PASS:
        # One op: the two a larger tensor takes cost more than the arithmetic here.
        std, mean = torch.std_mean(flat, dim=2, keepdim=True, correction=1 if count > 1 else 0)
        pieces = [mean, std]
    else:
        # Two passes (the mean, then the norm of the deviations): as stable as std_mean's
        # Welford update and, on the CPU, some 20 times faster on large tensors.
        total = flat.sum(dim=2, keepdim=True)
        pieces = [total, torch.linalg.vector_norm(torch.sub(flat, total, alpha=1.0 / count), dim=2, keepdim=True)]
    pieces += [flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)]
    if rows <= NORMS_ON_HOST:
        pieces.append(norms.view(k, 1, rows))
    else:
        pieces += [norms.amin(dim=(1, 2), keepdim=True), norms.sum(dim=(1, 2), keepdim=True), norms.amax(dim=(1, 2), keepdim=True)]
    pieces.append(values.take(_picks(k, count, preview, values.device)).view(k, 1, -1))
    return torch.cat(pieces, dim=2)


def queue_stats(x: Any, dim: int, transfer: HostTransfer, expr: str, seen: Described | None = None) -> PendingSummary:
    """First pass over one argument; ``dim`` is negative, relative to the broadcast shape;
    ``seen``: ``x`` described earlier (``describe``)."""
    described = describe(x, expr, seen)
    pending = PendingSummary(described)
    if not summarisable(x, described):
        return pending
    values, sampled = _values(x, dim)
    described.sampled = sampled
    described.rows = values.shape[0]
    norms = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
    preview = min(PREVIEW, values.shape[1])
    slot = transfer.vector(stats_of(values.unsqueeze(0), norms.unsqueeze(0), preview))
    pending.arg = ArgValues(values, norms, sampled, (slot, 0))
    return pending


def finish_stats(pending: PendingSummary, transfer: HostTransfer) -> TensorSummary:
    summary = pending.summary
    if pending.arg is None:
        return summary
    first = pending.arg.first_pass(transfer)
    mean, std, low, high, nmin, nmean, nmax = first
    slot, offset, count = pending.arg.preview_at
    summary.preview = transfer[slot][offset : offset + count]
    if all(map(math.isfinite, first)):
        summary.stats = ValueStats(min=low, max=high, mean=mean, std=std)
        summary.norm = Spread(min=nmin, mean=nmean, max=nmax)
        return summary
    # Rare path: something is not finite, or squares overflowed float32. Count the non-finite
    # values, and summarise the finite ones in float64 (a second transfer, for this call only).
    values = pending.arg.values.to(torch.float64)
    finite = torch.isfinite(values)
    count = finite.sum()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    zeroed = torch.where(finite, values, zero)
    fmean = zeroed.sum() / count.clamp_min(1)
    centred = torch.where(finite, values - fmean, zero)
    fstd = (centred.square().sum() / (count - 1).clamp_min(1)).sqrt()
    inf = torch.tensor(math.inf, dtype=values.dtype, device=values.device)
    flow = torch.where(finite, values, inf).min()
    fhigh = torch.where(finite, values, -inf).max()
    norms = torch.linalg.vector_norm(values, dim=-1)
    norm_ok = torch.isfinite(norms)
    norm_n = norm_ok.sum().clamp_min(1)
    nmin2 = torch.where(norm_ok, norms, inf).min()
    nmax2 = torch.where(norm_ok, norms, -inf).max()
    nmean2 = torch.where(norm_ok, norms, zero).sum() / norm_n
    extra = HostTransfer()
    slot = extra.scalars(
        count.to(values.dtype), fmean, fstd, flow, fhigh,
        torch.isnan(values).sum().to(values.dtype), torch.isinf(values).sum().to(values.dtype),
        norm_ok.sum().to(values.dtype), nmin2, nmean2, nmax2,
    )
    extra.fetch()
    (n, fmean_v, fstd_v, flow_v, fhigh_v, nan_v, inf_v, nok, nmin_v, nmean_v, nmax_v) = extra[slot]
    summary.nan, summary.inf = int(nan_v), int(inf_v)
    if n > 0:
        summary.stats = ValueStats(min=flow_v, max=fhigh_v, mean=fmean_v, std=fstd_v if n > 1 else 0.0)
    if nok > 0:
        summary.norm = Spread(min=nmin_v, mean=nmean_v, max=nmax_v)
    return summary
