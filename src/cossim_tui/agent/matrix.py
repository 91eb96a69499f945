"""A similarity matrix's own figures: positives against negatives, hardest negatives, equal rows.

Queued on the call's one transfer like every other figure (``PendingMatrix``), and read back
after its fetch as a ``MatrixFigures``. The positives are the diagonal (``diagonal_pairs``),
or, when both sides' rows came from labelled batches (``made_by``'s labels), the pairs whose
labels are equal; a
self-similarity matrix (``z @ z.T``) has its diagonal left out of both, since a row against
itself says nothing. Equal rows within a side are found by sorting a float64 weighted sum of
each row (an exact function of its values, with weights no two different rows of a batch
share by chance): two equal neighbours are two equal rows, in O(n·d), with no read-back.
Nothing here uses the script's random numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import HardNegative, MatrixFigures, Spread

COUNTED = 2048
"""Rows and columns the spreads are taken over (the first ones): a batch's matrix, whole."""
HEAT = 12
"""Rows and columns of the heat map."""
HARDEST = 5
DUPLICATE_ROWS = 8192
"""Rows of a side searched for an equal pair."""


def diagonal_pairs(rows: int, columns: int) -> bool:
    """Whether row i against column i is a positive pair: a square matrix, or one whose columns
    are the rows' positives followed by one or two hard negatives each (sentence-transformers'
    ``MultipleNegativesRankingLoss``: n × 2n, n × 3n). A bank of keys many times larger than the
    batch (MoCo's queue) has no positives in it."""
    return rows == columns or columns in (2 * rows, 3 * rows)


def _weights(width: int, device: torch.device) -> torch.Tensor:
    return torch.cos(torch.arange(width, dtype=torch.float64, device=device) * 0.7548776662 + 0.5) + 1.7


def _duplicates(rows: torch.Tensor) -> list[torch.Tensor]:
    """Whether two rows are equal, and the first such pair: three values, queued."""
    values = rows.detach()[:DUPLICATE_ROWS].to(torch.float64)
    key = (values * _weights(values.shape[1], values.device)).sum(dim=-1)
    # A zero row (zero-norm's business) equals nothing here; NaN keys never compare equal.
    key = torch.where(values.abs().amax(dim=-1) > 0, key, torch.full_like(key, math.nan))
    ordered, order = torch.sort(key)
    equal = ordered[1:] == ordered[:-1]
    if equal.numel() == 0:
        zero = torch.zeros((), dtype=torch.float64, device=values.device)
        return [zero, zero, zero]
    at = torch.argmax(equal.to(torch.int8))
    first, second = order[at], order[at + 1]
    return [equal.any().to(torch.float64), torch.minimum(first, second).to(torch.float64), torch.maximum(first, second).to(torch.float64)]


PRECISION_ROWS = 64
"""Rows of the matrix recomputed in float64 (evenly spaced), against every counted column."""


def _deviation(x1: Any, x2: Any, matrix: torch.Tensor) -> torch.Tensor:
    """The largest |matrix − float64 cosine of its rows' and columns' vectors| over a sample of
    rows (``precision-loss``, as for a pair: the operands' own norms are divided out, so a low
    precision normalisation counts too); -1 where it cannot be computed."""
    n, m = matrix.shape
    fallback = torch.full((), -1.0, dtype=torch.float64, device=matrix.device)
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)) or x1.dim() != 2 or x2.dim() != 2:
        return fallback
    if x1.shape[0] < n or x2.shape[0] < m or x1.shape[1] != x2.shape[1] or not (x1.is_floating_point() and x2.is_floating_point()):
        return fallback
    picks = torch.linspace(0, n - 1, min(n, PRECISION_ROWS), device=matrix.device).long()
    a = F.normalize(x1.detach()[picks.to(x1.device)].to(torch.float64), dim=-1)
    b = F.normalize(x2.detach()[:m].to(torch.float64), dim=-1)
    exact = (a @ b.T).to(matrix.device)
    got = matrix[picks]
    both_nan = torch.isnan(exact) & torch.isnan(got)
    return torch.where(both_nan, torch.zeros_like(exact), (exact - got).abs()).amax()


def _spread_of(values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    count = mask.sum()
    inf = torch.full_like(values, math.inf)
    low = torch.where(mask, values, inf).amin() if values.numel() else torch.zeros((), dtype=values.dtype, device=values.device)
    high = torch.where(mask, values, -inf).amax() if values.numel() else low
    mean = torch.where(mask, values, torch.zeros_like(values)).sum() / count.clamp_min(1)
    return [count.to(values.dtype), low, mean, high]


class PendingMatrix:
    """One matrix step's figures, queued on ``transfer``; ``finish()`` after its fetch."""

    def __init__(self, x1: Any, x2: Any, result: Any, labels: tuple[Any, Any], transfer: HostTransfer) -> None:
        self.transfer = transfer
        self.slot: int | None = None
        self.deviation: float | None = None
        """After ``finish``: the largest |matrix − float64| over the rows recomputed."""
        if not (isinstance(result, torch.Tensor) and result.dim() == 2 and result.layout == torch.strided and not result.is_meta):
            return
        if result.is_complex() or not result.is_floating_point():
            return
        self.rows, self.columns = result.shape
        self.self_similarity = (
            x1 is x2
            or (x1.shape == x2.shape and x1.stride() == x2.stride() and x1.data_ptr() == x2.data_ptr())
        )
        if torch.is_grad_enabled():
            with torch.no_grad():
                self._queue(x1, x2, result, labels)
        else:
            self._queue(x1, x2, result, labels)

    def _queue(self, x1: torch.Tensor, x2: torch.Tensor, result: torch.Tensor, labels: tuple[Any, Any]) -> None:
        matrix = result.detach()[:COUNTED, :COUNTED].to(torch.float64)
        n, m = matrix.shape
        self.counted = max(n, m)
        device = matrix.device
        first, second = labels
        by_labels = (
            isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)
            and first.dim() == 1 and second.dim() == 1
            and first.shape[0] == self.rows and second.shape[0] == self.columns
        )
        self.by_labels = by_labels
        if by_labels:
            positive = first[:n].to(device)[:, None] == second[:m].to(device)[None, :]
        elif diagonal_pairs(self.rows, self.columns):
            positive = torch.eye(n, m, dtype=torch.bool, device=device)
        else:
            # Queries against a bank of keys (MoCo's queue): nothing says which is a positive.
            positive = torch.zeros(n, m, dtype=torch.bool, device=device)
        negative = ~positive
        if self.self_similarity:
            diagonal = torch.eye(n, m, dtype=torch.bool, device=device)
            positive, negative = positive & ~diagonal, negative & ~diagonal
        finite = torch.isfinite(matrix)
        positive, negative = positive & finite, negative & finite
        figures = _spread_of(matrix, positive) + _spread_of(matrix, negative)
        # Two tensors of equal values are one set of rows twice (pytorch-metric-learning
        # normalises the embeddings once per side): a self-similarity matrix too, whose positives
        # leave the diagonal out. Which it is is known after the fetch, so both are queued.
        off_diagonal = positive & ~torch.eye(n, m, dtype=torch.bool, device=device)
        figures += _spread_of(matrix, off_diagonal)
        same_shape = not self.self_similarity and x1.shape == x2.shape and x1.device == x2.device
        figures.append(torch.eq(x1, x2).all().to(matrix.dtype).to(device) if same_shape else torch.zeros((), dtype=matrix.dtype, device=device))
        figures.append(_deviation(x1, x2, matrix))
        ranked = torch.where(negative, matrix, torch.full_like(matrix, -math.inf)).reshape(-1)
        top = torch.topk(ranked, min(HARDEST, ranked.numel()))
        self.hardest_count = top.values.shape[0]
        heat = matrix[:HEAT, :HEAT]
        heat_positive = positive[:HEAT, :HEAT].to(torch.float64)
        self.heat_shape = tuple(heat.shape)
        sides = (x1,) if self.self_similarity else (x1, x2)
        duplicates: list[torch.Tensor] = []
        for side in sides:
            if isinstance(side, torch.Tensor) and side.dim() == 2 and side.is_floating_point() and side.shape[0] > 1:
                duplicates += _duplicates(side)
            else:
                duplicates += [torch.zeros((), dtype=torch.float64, device=device)] * 3
        parts = [torch.stack(figures), top.values, top.indices.to(torch.float64), heat.reshape(-1), heat_positive.reshape(-1), torch.stack(duplicates).to(device)]
        self.slot = self.transfer.vector(torch.cat(parts))

    def finish(self) -> MatrixFigures | None:
        if self.slot is None:
            return None
        values = self.transfer[self.slot]
        p_count, p_low, p_mean, p_high, n_count, n_low, n_mean, n_high = values[:8]
        equal_values = bool(values[12])
        if equal_values:
            p_count, p_low, p_mean, p_high = values[8:12]
        deviation = values[13]
        self.deviation = deviation if deviation == deviation and deviation >= 0 else None  # noqa: PLR0124 - NaN
        at = 14
        k = self.hardest_count
        top_values, top_indices = values[at : at + k], values[at + k : at + 2 * k]
        at += 2 * k
        heat_rows, heat_columns = self.heat_shape
        cells = heat_rows * heat_columns
        heat_flat, positive_flat = values[at : at + cells], values[at + cells : at + 2 * cells]
        at += 2 * cells
        duplicates = []
        for side in range(len(values[at:]) // 3):
            found, row, other = values[at + 3 * side : at + 3 * side + 3]
            if found:
                duplicates.append([side, int(row), int(other)])
        columns = min(self.columns, COUNTED)
        hardest = [
            HardNegative(row=int(index) // columns, column=int(index) % columns, value=value)
            for value, index in zip(top_values, top_indices)
            if value != -math.inf
        ]
        return MatrixFigures(
            rows=self.rows,
            columns=self.columns,
            positives=Spread(min=p_low, mean=p_mean, max=p_high) if p_count else None,
            negatives=Spread(min=n_low, mean=n_mean, max=n_high) if n_count else None,
            by_labels=self.by_labels,
            self_similarity=self.self_similarity or equal_values,
            counted=self.counted,
            heat=[heat_flat[r * heat_columns : (r + 1) * heat_columns] for r in range(heat_rows)],
            heat_positive=[
                [bool(v) and not (equal_values and r == c) for c, v in enumerate(positive_flat[r * heat_columns : (r + 1) * heat_columns])]
                for r in range(heat_rows)
            ],
            hardest=hardest,
            duplicates=duplicates,
        )


def queue_matrix(x1: Any, x2: Any, result: Any, labels: tuple[Any, Any], transfer: HostTransfer) -> PendingMatrix:
    """Queue a similarity matrix's figures on ``transfer``; ``finish()`` after its fetch."""
    return PendingMatrix(x1, x2, result, labels, transfer)
