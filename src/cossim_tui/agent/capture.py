"""Summarises the two tensors of a cosine call, where they live, into small protocol records.

Statistics are computed on the tensors' own device with fused reductions (``std_mean``,
``aminmax``, ``vector_norm``) and brought to the host in one transfer; only when that first
pass shows a NaN or an infinity does a second pass count them and redo the statistics over
the finite values. Tensors with more than ``SAMPLE_LIMIT`` elements are summarised from
evenly spaced rows so that time and memory stay bounded. Nothing here keeps a reference to
a tensor, and nothing here can raise into the script: an argument that cannot be summarised
(sparse, meta, not a tensor) gets a ``note`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.protocol import Relation, Similarity, Spread, StorageInfo, TensorSummary, ValueStats

PREVIEW = 6
FIRST_ROWS = 8
SAMPLE_LIMIT = 1 << 24
SAMPLE_ROWS = 4096


class _Batch:
    """Collects 0-d and small tensors and fetches them to the host in one transfer."""

    def __init__(self) -> None:
        self._parts: list[torch.Tensor] = []
        self._sizes: list[int] = []

    def add(self, tensor: torch.Tensor) -> int:
        flat = tensor.detach().reshape(-1)
        if flat.is_complex():
            flat = flat.abs()
        self._parts.append(flat.to(torch.float64))
        self._sizes.append(flat.numel())
        return len(self._parts) - 1

    def fetch(self) -> list[list[float]]:
        if not self._parts:
            return []
        by_device: dict[torch.device, list[int]] = {}
        for index, part in enumerate(self._parts):
            by_device.setdefault(part.device, []).append(index)
        out: list[list[float]] = [[] for _ in self._parts]
        for indices in by_device.values():
            values = torch.cat([self._parts[i] for i in indices]).tolist()
            position = 0
            for i in indices:
                out[i] = values[position : position + self._sizes[i]]
                position += self._sizes[i]
        return out


def reduced_dim(dim: int, ndim: int) -> int:
    """``dim`` as a negative index into a tensor of ``ndim`` dims (torch's wrapping rules)."""
    if ndim == 0:
        return -1
    return dim - ndim if dim >= 0 else dim


def _rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The tensor as (rows, d) with the reduced dim last; a view where possible."""
    if x.dim() == 0:
        return x.reshape(1, 1)
    if -dim > x.dim():
        # The argument has no such dim of its own; broadcasting gives it size 1.
        return x.reshape(-1, 1)
    moved = x.movedim(dim, -1)
    return moved.reshape(-1, moved.shape[-1])


def _sample(rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if rows.numel() <= SAMPLE_LIMIT or rows.shape[0] <= SAMPLE_ROWS:
        return rows, False
    index = torch.linspace(0, rows.shape[0] - 1, SAMPLE_ROWS, device=rows.device).long()
    return rows.index_select(0, index), True


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype in (torch.float64, torch.complex128) else torch.float32


@dataclass
class _Pending:
    """What one argument's first pass queued in the batch, by slot."""

    tensor: Any
    summary_kwargs: dict[str, Any]
    slots: dict[str, int]
    values: torch.Tensor | None
    rows: torch.Tensor | None


def storage_info(x: torch.Tensor) -> StorageInfo | None:
    if x.layout != torch.strided or x.device.type == "meta":
        return None
    try:
        storage = x.untyped_storage()
        ptr = storage.data_ptr()
        start_address = x.data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    size = x.element_size()
    low = high = 0
    for extent, stride in zip(x.shape, x.stride()):
        if extent == 0:
            return StorageInfo(ptr, x.storage_offset(), list(x.stride()), size, [start_address, start_address])
        if stride >= 0:
            high += (extent - 1) * stride
        else:
            low += (extent - 1) * stride
    span = [start_address + low * size, start_address + (high + 1) * size]
    return StorageInfo(ptr, x.storage_offset(), list(x.stride()), size, span)


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
        dtype=str(x.dtype).removeprefix("torch."),
        device=str(x.device),
        layout=str(x.layout).removeprefix("torch."),
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


def _queue_stats(x: Any, dim: int, batch: _Batch, expr: str) -> _Pending:
    """First pass over one argument; ``dim`` is negative, relative to the broadcast shape."""
    described = _describe(x, expr)
    pending = _Pending(x, described, {}, None, None)
    if described.get("note"):
        return pending
    if x.layout != torch.strided:
        described["note"] = f"{described['layout']} tensor: values not summarised"
        return pending
    if x.device.type == "meta":
        described["note"] = "meta tensor: it has no values"
        return pending
    if x.numel() == 0:
        described["note"] = "empty tensor"
        return pending
    with torch.no_grad():
        data = x.detach()
        if data.is_complex():
            data = data.abs()
        rows = _rows(data, dim)
        rows, sampled = _sample(rows)
        values = rows.to(_working_dtype(x))
        described["sampled"] = sampled
        described["rows"] = rows.shape[0]
        norms = torch.linalg.vector_norm(values, dim=-1)
        std, mean = torch.std_mean(values, correction=1 if values.numel() > 1 else 0)
        low, high = torch.aminmax(values)
        pending.slots["first"] = batch.add(torch.stack([mean, std, low, high, norms.min(), norms.mean(), norms.max()]))
        pending.slots["preview"] = batch.add(values[0, :PREVIEW])
        pending.values, pending.rows = values, rows
    return pending


def _finish_stats(pending: _Pending, fetched: list[list[float]]) -> TensorSummary:
    kwargs = pending.summary_kwargs
    if "first" not in pending.slots:
        return TensorSummary(**kwargs)
    mean, std, low, high, nmin, nmean, nmax = fetched[pending.slots["first"]]
    kwargs["preview"] = fetched[pending.slots["preview"]]
    if all(math.isfinite(v) for v in (mean, std, low, high, nmin, nmean, nmax)):
        kwargs["stats"] = ValueStats(min=low, max=high, mean=mean, std=std)
        kwargs["norm"] = Spread(min=nmin, mean=nmean, max=nmax)
        return TensorSummary(**kwargs)
    # Rare path: something is not finite, or squares overflowed float32. Count the non-finite
    # values, and summarise the finite ones in float64.
    assert pending.values is not None
    values = pending.values.to(torch.float64)
    with torch.no_grad():
        finite = torch.isfinite(values)
        count = finite.sum()
        zeroed = torch.where(finite, values, torch.zeros((), dtype=values.dtype, device=values.device))
        fmean = zeroed.sum() / count.clamp_min(1)
        centred = torch.where(finite, values - fmean, torch.zeros((), dtype=values.dtype, device=values.device))
        fstd = (centred.square().sum() / (count - 1).clamp_min(1)).sqrt()
        inf = torch.tensor(math.inf, dtype=values.dtype, device=values.device)
        flow = torch.where(finite, values, inf).min()
        fhigh = torch.where(finite, values, -inf).max()
        norms = torch.linalg.vector_norm(values, dim=-1)
        norm_ok = torch.isfinite(norms)
        norm_n = norm_ok.sum().clamp_min(1)
        nmin2 = torch.where(norm_ok, norms, inf).min()
        nmax2 = torch.where(norm_ok, norms, -inf).max()
        nmean2 = torch.where(norm_ok, norms, torch.zeros((), dtype=values.dtype, device=values.device)).sum() / norm_n
        extra = _Batch()
        slot = extra.add(
            torch.stack([
                count.to(values.dtype), fmean, fstd, flow, fhigh,
                torch.isnan(values).sum().to(values.dtype), torch.isinf(values).sum().to(values.dtype),
                norm_ok.sum().to(values.dtype), nmin2, nmean2, nmax2,
            ])
        )
        (n, fmean_v, fstd_v, flow_v, fhigh_v, nan_v, inf_v, nok, nmin_v, nmean_v, nmax_v) = extra.fetch()[slot]
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


def capture_pair(
    x1: Any,
    x2: Any,
    dim: int,
    result: Any,
    exprs: tuple[str, str],
) -> PairCapture:
    """Summaries of both arguments, how they relate, and the similarity ``result`` holds."""
    batch = _Batch()
    both_tensors = isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
    shape = None
    if both_tensors:
        try:
            shape = list(torch.broadcast_shapes(x1.shape, x2.shape))
        except RuntimeError:
            shape = None
    # torch reads dim against the broadcast shape; so do we, once, as a negative index.
    ndim = len(shape) if shape is not None else max((x.dim() for x in (x1, x2) if isinstance(x, torch.Tensor)), default=0)
    in_range = -max(ndim, 1) <= dim < max(ndim, 1)
    d = reduced_dim(dim, ndim) if in_range else -1
    pending = [_queue_stats(x, d, batch, expr) for x, expr in zip((x1, x2), exprs)]
    if not in_range:
        for p in pending:
            if not p.summary_kwargs.get("note"):
                p.summary_kwargs["note"] = f"dim {dim} is out of range for {ndim} dims; summarised over the last dim"
    relation_slots: dict[str, int] = {}
    cos_slots: dict[str, int] = {}
    with torch.no_grad():
        if both_tensors:
            comparable = (
                x1 is not x2
                and x1.shape == x2.shape
                and x1.device == x2.device
                and x1.layout == torch.strided
                and x2.layout == torch.strided
                and x1.device.type != "meta"
                and x1.numel() > 0
            )
            if comparable:
                a, b = x1.detach(), x2.detach()
                if x1.numel() > SAMPLE_LIMIT:
                    a, _ = _sample(_rows(a, d))
                    b, _ = _sample(_rows(b, d))
                try:
                    unequal = torch.ne(a, b).any()
                    diff = (a.to(_working_dtype(a)) - b.to(_working_dtype(a))).abs().max()
                    relation_slots["cmp"] = batch.add(torch.stack([unequal.to(torch.float64), diff.to(torch.float64)]))
                except (RuntimeError, TypeError):
                    pass
        if isinstance(result, torch.Tensor) and result.numel() > 0 and result.layout == torch.strided and result.device.type != "meta":
            similarity = result.detach()
            if similarity.is_complex():
                similarity = similarity.real
            similarity = similarity.reshape(-1).to(torch.float64 if result.dtype == torch.float64 else torch.float32)
            angles = torch.rad2deg(torch.acos(similarity.clamp(-1.0, 1.0)))
            low, high = torch.aminmax(similarity)
            cos_slots["stats"] = batch.add(
                torch.stack([low, similarity.mean(), high, angles.min(), angles.mean(), angles.max(), torch.isnan(similarity).sum().to(similarity.dtype)])
            )
            cos_slots["first"] = batch.add(similarity[:FIRST_ROWS])

    fetched = batch.fetch()
    args = [_finish_stats(p, fetched) for p in pending]

    relation = None
    if both_tensors:
        dim_size = shape[d] if shape and in_range and -d <= len(shape) else 0
        equal = diff_value = None
        if x1 is x2:
            equal, diff_value = True, 0.0
        elif "cmp" in relation_slots:
            unequal_v, diff_value = fetched[relation_slots["cmp"]]
            equal = unequal_v == 0.0
        relation = Relation(
            same_object=x1 is x2,
            shares_storage=shares_memory(x1, x2, args[0].storage, args[1].storage),
            equal_values=equal,
            max_abs_diff=diff_value,
            dim=dim,
            dim_size=dim_size,
            broadcast_shape=shape if shape is not None and list(x1.shape) != list(x2.shape) else None,
        )

    cos = None
    if cos_slots:
        low_v, mean_v, high_v, amin, amean, amax, nan_v = fetched[cos_slots["stats"]]
        cos = Similarity(
            count=result.numel(),
            min=low_v,
            mean=mean_v,
            max=high_v,
            first=fetched[cos_slots["first"]],
            angle_deg=Spread(min=amin, mean=amean, max=amax),
            nan=int(nan_v),
        )
    return PairCapture(args, relation, cos)
