"""Summarises the two tensors of a cosine call, where they live, into small protocol records.

Statistics are computed on the tensors' own device with a few fused reductions (the sum, then
the norm of the deviations from the mean; amin/amax; row norms) and queued on a ``HostTransfer``,
which the caller fetches once for the whole call (evidence and context queue theirs on the same
one); the host finishes them (divisions, and the min/mean/max of a few rows' norms), since on a
small tensor each device op costs more than its arithmetic.
Two small arguments of one shape are stacked and summarised together, in float64; large ones
in float32 (float64 stays float64). Only when the first pass shows a NaN, an infinity or an
overflow does a second pass count them and redo the statistics over the finite values.
Arguments of more than ``SAMPLE_LIMIT`` elements are summarised from evenly spaced rows so
that time and memory stay bounded (equality is still decided on every element). A similarity
of a few values is brought to the host whole and summarised there.

Nothing here keeps a reference to a tensor, and nothing here can raise into the script: an
argument that cannot be summarised (sparse, meta, not a tensor) gets a ``note`` instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.tensors import as_rows, broadcast_shape, reduced_dim
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import Relation, Similarity, Spread, StorageInfo, TensorSummary, ValueStats

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
        "_stack", "_index", "_values", "_norms", "rows", "width", "dtype", "sampled", "stats_at", "preview_at", "sample_at", "_first_pass"
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
        """(slot, offset) where ``_stats_of``'s figures for this argument come back on the transfer."""
        slot, offset = stats_at
        preview, count = min(PREVIEW, self.width), self.rows * self.width
        self.preview_at = (slot, offset + _stats_width(self.rows), preview)
        """(slot, offset, count) of the preview."""
        self.sample_at = (slot, offset + _stats_width(self.rows) + preview, min(count, SAMPLE))
        """(slot, offset, count) of ``SAMPLE`` evenly spaced values (all of them when fewer)."""
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
            if count > SMALL:  # the sum and the norm of the deviations (see _stats_of)
                mean, std = mean / count, std / math.sqrt(count - 1)
            self._first_pass = [mean, std, low, high, nmin, nmean, nmax]
        return self._first_pass


def _stats_width(rows: int) -> int:
    """How many figures ``_stats_of`` queues per argument before its preview."""
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
class _Pending:
    """What one argument's first pass queued on the transfer."""

    summary_kwargs: dict[str, Any]
    arg: ArgValues | None = None


def storage_info(x: torch.Tensor) -> StorageInfo | None:
    if x.layout != torch.strided or x.is_meta:
        return None
    try:
        start_address = x.data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    size = x.element_size()
    ptr = start_address - x.storage_offset() * size  # where the storage starts
    strides = list(x.stride())
    low = high = 0
    for extent, stride in zip(x.shape, strides):
        if extent == 0:
            return StorageInfo(ptr, x.storage_offset(), strides, size, [start_address, start_address])
        if stride >= 0:
            high += (extent - 1) * stride
        else:
            low += (extent - 1) * stride
    span = [start_address + low * size, start_address + (high + 1) * size]
    return StorageInfo(ptr, x.storage_offset(), strides, size, span)


_NAMES: dict[Any, str] = {}


def _name(value: Any) -> str:
    """``float32`` for ``torch.float32``, ``strided`` for ``torch.strided`` (cached: str() is slow)."""
    name = _NAMES.get(value)
    if name is None:
        name = _NAMES[value] = str(value).removeprefix("torch.")
    return name


def _describe(x: Any, expr: str) -> dict[str, Any]:
    if not isinstance(x, torch.Tensor):
        return dict(
            expr=expr, shape=[], dtype=type(x).__name__, device="-", layout="-", numel=0,
            requires_grad=False, grad_fn=None, is_leaf=True, norm=None, rows=0, stats=None,
            nan=0, inf=0, preview=[], storage=None, note=f"not a tensor ({type(x).__name__})",
        )
    grad_fn = x.grad_fn
    return dict(
        expr=expr,
        shape=list(x.shape),
        dtype=_name(x.dtype),
        device=_name(x.device),
        layout=_name(x.layout),
        numel=x.numel(),
        requires_grad=x.requires_grad,
        grad_fn=type(grad_fn).__name__ if grad_fn is not None else None,
        is_leaf=x.is_leaf,
        norm=None,
        rows=0,
        stats=None,
        nan=0,
        inf=0,
        preview=[],
        storage=storage_info(x),
    )


def _summarisable(x: Any, described: dict[str, Any]) -> bool:
    """Whether ``x`` has values to summarise; if not, ``described`` gets a note saying why."""
    if described.get("note"):
        return False
    if x.layout != torch.strided:
        described["note"] = f"{described['layout']} tensor: values not summarised"
    elif x.is_meta:
        described["note"] = "meta tensor: it has no values"
    elif x.numel() == 0:
        described["note"] = "empty tensor"
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


def _stats_of(values: torch.Tensor, norms: torch.Tensor, preview: int) -> torch.Tensor:
    """Of each of a stack of k (rows, d) values and their (k, rows, 1) norms, (k, 1, m): the mean
    and std (up to ``SMALL`` values; above, the sum and the norm of the deviations from the
    mean), min, max, the norms (their min, sum and max above ``NORMS_ON_HOST`` rows), and the
    first ``preview`` values. ``ArgValues.first_pass`` divides and summarises on the host: exact
    there, and no device op.

    One argument or two stacked, the reductions are the same, so equal values always give
    bit-equal figures (evidence compares them across steps)."""
    k, rows, width = values.shape
    count = rows * width
    flat = values.view(k, 1, count)
    if count <= SMALL:
        # One op: the two a large tensor takes cost more than the arithmetic here.
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


def _queue_stats(x: Any, dim: int, transfer: HostTransfer, expr: str, described: dict[str, Any] | None = None) -> _Pending:
    """First pass over one argument; ``dim`` is negative, relative to the broadcast shape."""
    described = _describe(x, expr) if described is None else described
    pending = _Pending(described)
    if not _summarisable(x, described):
        return pending
    values, sampled = _values(x, dim)
    described["sampled"] = sampled
    described["rows"] = values.shape[0]
    norms = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
    preview = min(PREVIEW, values.shape[1])
    slot = transfer.vector(_stats_of(values.unsqueeze(0), norms.unsqueeze(0), preview))
    pending.arg = ArgValues(values, norms, sampled, (slot, 0))
    return pending


def _finish_stats(pending: _Pending, transfer: HostTransfer) -> TensorSummary:
    kwargs = pending.summary_kwargs
    if pending.arg is None:
        return TensorSummary(**kwargs)
    first = pending.arg.first_pass(transfer)
    mean, std, low, high, nmin, nmean, nmax = first
    slot, offset, count = pending.arg.preview_at
    kwargs["preview"] = transfer[slot][offset : offset + count]
    if all(map(math.isfinite, first)):
        kwargs["stats"] = ValueStats(min=low, max=high, mean=mean, std=std)
        kwargs["norm"] = Spread(min=nmin, mean=nmean, max=nmax)
        return TensorSummary(**kwargs)
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
    kwargs["nan"], kwargs["inf"] = int(nan_v), int(inf_v)
    if n > 0:
        kwargs["stats"] = ValueStats(min=flow_v, max=fhigh_v, mean=fmean_v, std=fstd_v if n > 1 else 0.0)
    if nok > 0:
        kwargs["norm"] = Spread(min=nmin_v, mean=nmean_v, max=nmax_v)
    return TensorSummary(**kwargs)


def _spans_overlap(a: StorageInfo | None, b: StorageInfo | None) -> bool:
    if a is None or b is None:
        return False
    if a.span[0] == a.span[1] or b.span[0] == b.span[1]:
        return False
    return a.span[0] < b.span[1] and b.span[0] < a.span[1]


OVERLAP_EXACT_LIMIT = 1 << 22


def _element_addresses(x: torch.Tensor) -> torch.Tensor:
    """Byte address of every element of a strided tensor, without touching its values."""
    addresses = torch.full((), x.data_ptr(), dtype=torch.int64)
    for extent, stride in zip(x.shape, x.stride()):
        addresses = addresses.unsqueeze(-1) + torch.arange(extent, dtype=torch.int64) * (stride * x.element_size())
    return addresses.reshape(-1)


def shares_memory(x1: torch.Tensor, x2: torch.Tensor, a: StorageInfo | None, b: StorageInfo | None) -> bool:
    """Whether some element of one is an element of the other (not merely an address range)."""
    if x1 is x2:
        return True
    if not _spans_overlap(a, b):
        return False
    if x1.element_size() != x2.element_size() or max(x1.numel(), x2.numel()) > OVERLAP_EXACT_LIMIT:
        # Reinterpreted dtypes or huge tensors: the address ranges overlap, which is what we know.
        return True
    # Interleaved views (the two halves of a `chunk(2, -1)`) overlap in range but share nothing.
    return bool(torch.isin(_element_addresses(x1), _element_addresses(x2)).any())


@dataclass
class PairCapture:
    args: list[TensorSummary]
    relation: Relation | None
    cos: Similarity | None


class PendingPair:
    """One call's summaries, queued on a transfer; ``finish()`` once it has been fetched."""

    def __init__(
        self, x1: Any, x2: Any, dim: int, result: Any, exprs: tuple[str, str], transfer: HostTransfer,
        values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        described: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> None:
        self.x1, self.x2, self.dim, self.result, self.transfer = x1, x2, dim, result, transfer
        self.values = values
        """Host copies of a small pair's values and of the result, where the agent made them (see
        ``small_pair_on_device``): they are read instead of the tensors' own; everything else
        (shape, storage, autograd, identity) is still read from the script's tensors."""
        self.described = described
        """``describe_pair`` of the tensors, where it was read at the call and the values are
        summarised later (``values``); else it is read now."""
        both_tensors = isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
        self.both_tensors = both_tensors
        self.shape = broadcast_shape(x1.shape, x2.shape) if both_tensors else None
        # torch reads dim against the broadcast shape; so do we, once, as a negative index.
        ndim = len(self.shape) if self.shape is not None else max((x.dim() for x in (x1, x2) if isinstance(x, torch.Tensor)), default=0)
        self.ndim = ndim
        self.in_range = -max(ndim, 1) <= dim < max(ndim, 1)
        self.d = reduced_dim(dim, ndim) if self.in_range else -1
        self.stacked: tuple[torch.Tensor, torch.Tensor] | None = None
        """Both arguments' values and norms as one (2, rows, d) and (2, rows, 1), when small and alike."""
        self.compare_slot: int | None = None
        self.exact_only = False
        if torch.is_grad_enabled():
            with torch.no_grad():
                self._queue(exprs)
        else:  # the agent's capture is under no_grad already
            self._queue(exprs)

    def _queue(self, exprs: tuple[str, str]) -> None:
        x1, x2 = self.x1, self.x2
        if self.both_tensors and self._stackable():
            self.pending = self._queue_stacked(exprs)
        else:
            described = self.described or (None, None)
            self.pending = [_queue_stats(x, self.d, self.transfer, expr, known) for x, expr, known in zip((x1, x2), exprs, described)]
            if self.both_tensors:
                self.compare_slot = self._queue_comparison()
        if not self.in_range:
            for p in self.pending:
                if not p.summary_kwargs.get("note"):
                    p.summary_kwargs["note"] = f"dim {self.dim} is out of range for {self.ndim} dims; summarised over the last dim"
        self.cos_slots = self._queue_similarity()

    def _stackable(self) -> bool:
        x1, x2 = self.x1, self.x2
        return (
            x1.shape == x2.shape
            and x1.dtype == x2.dtype
            and x1.device == x2.device
            and x1.layout == torch.strided
            and x2.layout == torch.strided
            and not x1.is_meta
            and 0 < x1.numel() <= SMALL
            and x1.is_floating_point()
        )

    def _queue_stacked(self, exprs: tuple[str, str]) -> list[_Pending]:
        """Both arguments at once: one stack, one set of reductions, one queued vector."""
        x1, x2 = self.x1, self.x2
        described = self.described or (_describe(x1, exprs[0]), _describe(x2, exprs[1]))
        pending = [_Pending(known) for known in described]
        d = self.d
        # (Under no_grad: the stack records no autograd history, so no detach is needed.)
        v1, v2 = (x1, x2) if self.values is None else self.values[:2]
        values = torch.stack((as_rows(v1, d), as_rows(v2, d))).to(torch.float64)
        norms = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
        self.stacked = (values, norms)
        rows, width = values.shape[1], values.shape[2]
        preview = min(PREVIEW, width)
        slot = self.transfer.vector(_stats_of(values, norms, preview))
        if x1 is not x2:
            # Equal values ⇔ the largest difference is 0, unless it is NaN (checked in finish).
            # min and max of the difference: one pass (the largest |difference| is one of them).
            self.compare_slot = self.transfer.vector(torch.stack(torch.aminmax(values.diff(dim=0))))
        stride = _stats_width(rows) + preview + min(rows * width, SAMPLE)
        for index, p in enumerate(pending):
            p.summary_kwargs["rows"] = rows
            p.arg = ArgValues(values, norms, False, (slot, index * stride), index)
        return pending

    @property
    def args(self) -> list[ArgValues | None]:
        """Each argument's values, where they were summarised (for ``evidence``)."""
        return [p.arg for p in self.pending]

    def _queue_comparison(self) -> int | None:
        x1, x2 = self.x1, self.x2
        comparable = (
            x1 is not x2
            and x1.shape == x2.shape
            and x1.device == x2.device
            and x1.layout == torch.strided
            and x2.layout == torch.strided
            and not x1.is_meta
            and x1.numel() > 0
        )
        if not comparable:
            return None
        first, second = self.args
        try:
            if x1.is_floating_point() and x2.is_floating_point():
                # Equal values ⇔ the largest difference is 0, unless it is NaN (checked in finish).
                # Sampled summaries do not say: then on the tensors themselves.
                if first is not None and second is not None and not (first.sampled or second.sampled):
                    difference = first.values - second.values
                else:
                    difference = x1.detach() - x2.detach()
                return self.transfer.vector(torch.stack(torch.aminmax(difference)))
            a, b = x1.detach(), x2.detach()
            self.exact_only = True
            dtype = torch.float64 if a.dtype in (torch.float64, torch.complex128) else torch.float32
            diff = (a.to(dtype) - b.to(dtype)).abs().max()
            return self.transfer.scalars(torch.ne(a, b).any().to(diff.dtype), diff)
        except (RuntimeError, TypeError):
            return None

    def _queue_similarity(self) -> dict[str, int]:
        result = self.result
        if not (isinstance(result, torch.Tensor) and result.numel() > 0 and result.layout == torch.strided and not result.is_meta):
            return {}
        if self.values is not None:
            result = self.values[2]
        # (Read under no_grad: no detach needed, and the values are the result's own.)
        similarity = result
        if similarity.is_complex():
            similarity = similarity.real
        if similarity.numel() <= COS_ON_HOST:
            return {"all": self.transfer.vector(similarity)}
        similarity = similarity.reshape(-1).to(torch.float64 if result.dtype == torch.float64 else torch.float32)
        angles = torch.rad2deg(torch.acos(similarity.clamp(-1.0, 1.0)))
        low, high = torch.aminmax(similarity)
        return {
            "stats": self.transfer.scalars(
                low, similarity.mean(), high, angles.min(), angles.mean(), angles.max(),
                torch.isnan(similarity).sum().to(similarity.dtype),
            ),
            "first": self.transfer.vector(similarity[:FIRST_ROWS]),
        }

    def similarity_values(self) -> list[float] | None:
        """Every value of the similarity, when it was small enough to be fetched whole."""
        slot = self.cos_slots.get("all")
        return self.transfer[slot] if slot is not None else None

    def first_pass(self, index: int) -> list[float] | None:
        """mean, std, min, max, min/mean/max norm of one argument, as fetched."""
        arg = self.pending[index].arg
        return arg.first_pass(self.transfer) if arg is not None else None

    def finish(self) -> PairCapture:
        x1, x2, transfer = self.x1, self.x2, self.transfer
        args = [_finish_stats(p, transfer) for p in self.pending]

        relation = None
        if self.both_tensors:
            shape, d = self.shape, self.d
            dim_size = shape[d] if shape and self.in_range and -d <= len(shape) else 0
            equal = diff_value = None
            if x1 is x2:
                equal, diff_value = True, 0.0
            elif self.compare_slot is not None:
                if self.exact_only:
                    unequal_v, diff_value = transfer[self.compare_slot]
                    equal = unequal_v == 0.0
                else:
                    low, high = transfer[self.compare_slot]
                    diff_value = max(-low, high) if low == low and high == high else math.nan
                    if math.isnan(diff_value):  # NaN or ±inf somewhere: only an exact comparison says
                        with torch.no_grad():
                            v1, v2 = (x1, x2) if self.values is None else self.values[:2]
                            equal = not bool(torch.ne(v1.detach(), v2.detach()).any())
                    else:
                        equal = diff_value == 0.0
            relation = Relation(
                same_object=x1 is x2,
                shares_storage=shares_memory(x1, x2, args[0].storage, args[1].storage),
                equal_values=equal,
                max_abs_diff=diff_value,
                dim=self.dim,
                dim_size=dim_size,
                broadcast_shape=shape if shape is not None and list(x1.shape) != list(x2.shape) else None,
            )

        return PairCapture(args, relation, self._finish_similarity())

    def _finish_similarity(self) -> Similarity | None:
        if not self.cos_slots:
            return None
        values = self.similarity_values()
        if values is not None:
            nan = sum(1 for v in values if v != v)
            if nan:
                low = mean = high = amin = amean = amax = math.nan
            else:
                low, high, mean = min(values), max(values), math.fsum(values) / len(values)
                degrees, acos = math.degrees, math.acos
                angles = [degrees(acos(1.0 if v > 1.0 else -1.0 if v < -1.0 else v)) for v in values]
                amin, amean, amax = min(angles), math.fsum(angles) / len(angles), max(angles)
            return Similarity(
                count=len(values), min=low, mean=mean, max=high, first=values[:FIRST_ROWS],
                angle_deg=Spread(min=amin, mean=amean, max=amax), nan=nan,
            )
        low, mean, high, amin, amean, amax, nan_v = self.transfer[self.cos_slots["stats"]]
        return Similarity(
            count=self.result.numel(),
            min=low,
            mean=mean,
            max=high,
            first=self.transfer[self.cos_slots["first"]],
            angle_deg=Spread(min=amin, mean=amean, max=amax),
            nan=int(nan_v),
        )


def queue_pair(
    x1: Any, x2: Any, dim: int, result: Any, exprs: tuple[str, str], transfer: HostTransfer,
    values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    described: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> PendingPair:
    """Queue everything ``capture_pair`` reports on ``transfer``; ``finish()`` after its fetch.
    ``values``: host copies of the pair's values and of the result (``copy_small_pair``);
    ``described``: ``describe_pair`` read when they were made."""
    return PendingPair(x1, x2, dim, result, exprs, transfer, values, described)


def describe_pair(x1: Any, x2: Any, exprs: tuple[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a summary reads from the tensors themselves rather than from their values (shape,
    dtype, autograd, storage), as they are now: for a pair summarised later from host copies
    (``queue_pair``'s ``described``), by which time the script may have changed them."""
    return _describe(x1, exprs[0]), _describe(x2, exprs[1])


HOST_COPY_LIMIT = 2048
"""Values per argument up to which a pair on a device is summarised from host copies. On an
H200 (torch 2.11), a call of two (8, 64) float32 arguments cost 607 µs summarised from host
copies and 760 µs with its few dozen small reductions launched as kernels on the device; at
(64, 256) the device was ahead, 857 µs against 1,090."""


def small_pair_on_device(x1: Any, x2: Any, result: Any) -> bool:
    """Whether a call's pair is summarised from host copies of its values: two small real
    floating tensors of one shape, dtype and device, off the CPU, with a result there too. Their
    values and the result travel in the call's one transfer and are summarised on the host,
    rather than by a few dozen tiny kernels, each launched from Python (``HOST_COPY_LIMIT``).
    Larger arguments stay on their device, where the reductions pay."""
    return (
        isinstance(x1, torch.Tensor)
        and isinstance(x2, torch.Tensor)
        and isinstance(result, torch.Tensor)
        and not x1.is_cpu
        and not x1.is_meta
        and x1.shape == x2.shape
        and x1.dtype == x2.dtype
        and x1.device == x2.device == result.device
        and x1.layout == x2.layout == result.layout == torch.strided
        and 0 < x1.numel() <= HOST_COPY_LIMIT
        and x1.is_floating_point()
        and not x1.is_complex()
        and result.numel() <= HOST_COPY_LIMIT
    )


def copy_small_pair(
    x1: torch.Tensor, x2: torch.Tensor, result: torch.Tensor, transfer: HostTransfer
) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Queue the values of a ``small_pair_on_device`` pair and of its result on ``transfer``; what
    it returns gives them, after the fetch, as host tensors of their own shapes (in a floating
    dtype that holds them exactly)."""
    with torch.no_grad():
        slot = transfer.copy(torch.cat((x1.detach().reshape(-1), x2.detach().reshape(-1), result.detach().reshape(-1))))
    n, shapes = x1.numel(), (x1.shape, x2.shape, result.shape)  # as they are now

    def host() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = transfer.host(slot)
        return flat[:n].view(shapes[0]), flat[n : 2 * n].view(shapes[1]), flat[2 * n :].view(shapes[2])

    return host


def capture_pair(
    x1: Any,
    x2: Any,
    dim: int,
    result: Any,
    exprs: tuple[str, str],
) -> PairCapture:
    """Summaries of both arguments, how they relate, and the similarity ``result`` holds."""
    transfer = HostTransfer()
    pending = queue_pair(x1, x2, dim, result, exprs, transfer)
    transfer.fetch()
    return pending.finish()
