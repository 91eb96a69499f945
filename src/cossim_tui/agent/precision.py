"""Does a float64 recomputation agree with the similarity the call returned?

At most ``SAMPLE_ROWS`` evenly spaced rows are recomputed with torch's own formula in float64
(``queue_precision``, queued on the call's transfer); ``deviation`` compares figures already
on the host. The judge calls a difference above 1e-3 ``precision-loss``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from cossim_tui.agent.spread import SAMPLE_ROWS
from cossim_tui.agent.tensors import broadcast_shape, reduced_dim
from cossim_tui.agent.transfer import HostTransfer


@functools.lru_cache(maxsize=64)
def _picks(leading: tuple[int, ...], device: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Up to ``SAMPLE_ROWS`` evenly spaced rows of a result of shape ``leading``: their flat
    indices and their index in each dim (made on the host once per shape, never read back)."""
    total = math.prod(leading)
    flat = torch.linspace(0, total - 1, min(total, SAMPLE_ROWS)).long().unique().tolist()
    per_dim = []
    for index in flat:
        coordinates = []
        for size in reversed(leading):
            index, rest = divmod(index, size)
            coordinates.append(rest)
        per_dim.append(coordinates[::-1])
    columns = tuple(torch.tensor([c[k] for c in per_dim], device=device) for k in range(len(leading)))
    return torch.tensor(flat, device=device), columns


def queue_precision(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float, result: Any, transfer: HostTransfer) -> int | None:
    """The largest |result − float64 recomputation| over at most ``SAMPLE_ROWS`` rows, queued."""
    if not isinstance(result, torch.Tensor) or result.numel() == 0 or result.layout != torch.strided:
        return None
    if not (x1.is_floating_point() and x2.is_floating_point()) or result.is_meta:
        return None
    shape = broadcast_shape(x1.shape, x2.shape)  # torch.broadcast_shapes imports sympy on first use
    if shape is None or len(shape) == 0:
        return None
    d = reduced_dim(dim, len(shape))
    a = x1.detach().expand(shape).movedim(d, -1)
    b = x2.detach().expand(shape).movedim(d, -1)
    leading = tuple(a.shape[:-1])
    total = result.numel()
    if total != math.prod(leading):
        return None
    picks, index = _picks(leading, result.device)
    if len(leading) == 1:
        rows_a, rows_b = a.index_select(0, picks), b.index_select(0, picks)
    else:
        rows_a = a[index] if leading else a.reshape(1, -1)
        rows_b = b[index] if leading else b.reshape(1, -1)
    rows_a, rows_b = rows_a.to(torch.float64), rows_b.to(torch.float64)
    # torch's own formula (each norm clamped at eps), in float64; written out, because the
    # library function is several times slower for the same figure.
    norms = torch.linalg.vector_norm(rows_a, dim=-1).clamp_min(eps) * torch.linalg.vector_norm(rows_b, dim=-1).clamp_min(eps)
    exact = (rows_a * rows_b).sum(dim=-1) / norms
    got = result.detach().reshape(-1).index_select(0, picks)
    return transfer.scalars(deviations(exact, got))


def deviations(exact: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """``deviation`` made next to the tensors, over the last dim ((k, n) to (k,), or (n,) to
    one value): the same IEEE subtraction and maximum, in float64 (``got`` promoted to it
    exactly), a NaN on both sides left out and on one side infinitely far."""
    got = got.to(torch.float64)
    both_nan = torch.isnan(exact) & torch.isnan(got)
    apart = torch.where(both_nan, torch.zeros_like(exact), (exact - got).abs()).amax(dim=-1)
    # (A NaN left in a row, one side's, is its maximum: infinitely far, as ``deviation`` says.)
    return apart.nan_to_num(nan=math.inf, posinf=math.inf)


def deviation(exact: list[float], got: list[float]) -> float:
    """max |exact − got|, a NaN on one side only being infinitely far."""
    worst = 0.0
    for e, g in zip(exact, got):
        if e != e or g != g:
            if not (e != e and g != g):
                return math.inf
            continue
        worst = max(worst, abs(e - g))
    return worst


