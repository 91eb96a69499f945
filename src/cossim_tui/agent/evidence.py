"""The tensor-side facts the judges need beyond one step's summary, and the history behind them.

Judging is pure (``diagnostics.judge``), but some questions can only be answered next to the
tensors: is this argument the memory, or the values, of an argument seen a few steps ago?
Do the vectors of different samples point the same way? Does a float64 recomputation agree?
This module answers them with bounded work and bounded memory:

- the last ``keep_steps`` steps' arguments are remembered by a weak reference to their
  storage (so nothing is kept alive) and a value fingerprint (their statistics and a strided
  sample); a fingerprint match is confirmed exactly whenever the earlier storage still lives;
- each call site keeps a ring of at most ``ring_rows`` L2-normalised rows for the collapse
  score across steps; it is scored only when no argument has a batch of its own to score
  (the judge uses it only then). Arguments of fewer than 4 rows come back to the host with
  the transfer, and off the CPU such a site's ring lives on the host;
- precision and common-mode checks use at most ``SAMPLE_ROWS`` rows, and a large argument's
  rows are the evenly spaced ones ``capture`` sampled; the common-mode drop is measured only
  where it could reach the judge's threshold.

It works on the rows ``capture`` already made (``ArgValues``) and queues what it needs on the
same ``HostTransfer``, so a call costs one device→host transfer. The collapse and common-mode
statistics of a batch are computed from a few fused reductions (both arguments at once when
they are small) under the assumption that every row is a usable sample; what comes back
says whether that held (all finite, no zero row, not one vector repeated), and where it did
not, the reference functions below recompute that argument's figures exactly.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.capture import (
    SAMPLE,
    SMALL,
    ArgValues,
    PendingPair,
    _rows,
    broadcast_shape,
    queue_pair,
    reduced_dim,
    working_dtype,
)
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.diagnostics.judge import COMMON_MODE_CONFIDENCE, COMMON_MODE_DROP, Evidence, StaleMatch

SAMPLE_ROWS = 64
COLLAPSE_ROWS = 256
FINGERPRINT_SAMPLE = SAMPLE
"""Values a fingerprint holds besides the statistics (capture fetches them with the preview)."""
RING_ON_HOST = 4096
"""An argument of fewer than 4 rows (and at most this many values) feeds its site's ring: its
rows come back with the transfer, and off the CPU the ring is made of them on the host, so
scoring it needs no device."""
USABLE_SPREAD = 1e-6
"""Below this collapse score the fused statistics are not trusted (a vector repeated n times
is one sample, not a collapsed batch): the reference functions decide."""
_NAN_SENTINEL = -1.2345678901234567e300
_BATCH_UNITS = object()
MOMENTS_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
"""How far apart, relative to the values' magnitude, the mean and std of equal values may come
out, by the dtype they were reduced in: a reduction's order, and so its last bits, can differ
between a tensor summarised alone and in a stack (on a GPU, even between the two places of
one stack)."""


@dataclass(frozen=True, slots=True)
class _Print:
    """An argument's value fingerprint: ``key``, figures that are exact copies of values (its min
    and max, and ``FINGERPRINT_SAMPLE`` evenly spaced values; NaN as a sentinel, so that it
    compares equal), looked up as is; and its mean and std, compared within
    ``MOMENTS_TOLERANCE``, since how they were reduced shows in their last bits."""

    key: tuple[float, ...]
    mean: float
    std: float
    tolerance: float

    @property
    def constant(self) -> bool:
        """Min equal to max: every value the same (NaN is never equal, as in x == x[0])."""
        return self.key[0] == self.key[1] != _NAN_SENTINEL

    def moments_agree(self, other: _Print) -> bool:
        low, high = self.key[0], self.key[1]
        scale = max(abs(low), abs(high)) if math.isfinite(low) and math.isfinite(high) else 0.0
        return all(
            a == b or (a != a and b != b) or abs(a - b) <= max(self.tolerance, other.tolerance) * scale
            for a, b in ((self.mean, other.mean), (self.std, other.std))
        )


@dataclass(slots=True)
class _Seen:
    """One argument of an earlier step, remembered without keeping it alive."""

    step: int
    arg: int
    expr: str
    storage: weakref.ref | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    fingerprint: _Print
    had_grad: bool
    storage_offset: int
    strides: tuple[int, ...]
    values: torch.Tensor | None = None
    """Its values as they were at its call, where they were copied to the host (a small pair on a
    device): a later match is confirmed against them."""


class _Piece:
    """Rows pushed at once onto a ring, and whether the ring's totals count them yet."""

    __slots__ = ("counted", "rows")

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.counted = False


def _sums(rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sum and sum of squares of ``rows``, in float64 on ``device``."""
    rows = rows.to(device=device, dtype=torch.float64)
    return rows.sum(dim=0), (rows * rows).sum(dim=0)


class _SiteRing:
    """The last ``capacity`` unit rows of new vectors at one call site.

    A push keeps the pushed tensor (the agent's own unit rows, never the script's tensors) rather
    than copying it: the ring is read only at a site whose steps have no batch of their own to
    score. Its score needs only the rows' per-channel sum and sum of squares, kept as running
    totals: a score counts the pieces pushed since the one before, a counted piece that leaves
    is taken back out (from its rows: nothing per piece is kept), and every ``capacity`` rows
    the totals are made again from the rows themselves, so that rounding cannot build up. A
    site with one row a call (pairs of single vectors) thus costs a few tiny reductions a step,
    not a pass over the whole ring."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._pieces: deque[_Piece] = deque()
        self._filled = 0
        """Rows in ``_pieces``: the last ``capacity`` of them are the ring's."""
        self._totals: tuple[torch.Tensor, torch.Tensor] | None = None
        """Sum and sum of squares over the rows of every ``counted`` piece (a run of the oldest)."""
        self._added = 0
        """Rows added to ``_totals`` since they were last made from the rows themselves."""

    @property
    def rows(self) -> torch.Tensor:
        """The ring's rows, oldest first (float64, on the device of the newest)."""
        if not self._pieces:
            return torch.empty(0, 0)
        return self._joined()[-self.capacity :]

    def push(self, unit: torch.Tensor) -> None:
        """Append rows, forgetting the oldest beyond ``capacity``."""
        count = unit.shape[0]
        if count == 0 or self.capacity == 0:
            return
        if self._pieces and self._pieces[-1].rows.shape[1] != unit.shape[1]:
            # Vectors of another size at the same site: what came before says nothing about them.
            self._pieces.clear()
            self._filled = 0
            self._totals = None
        self._pieces.append(_Piece(unit))
        self._filled += count
        while self._filled - self._pieces[0].rows.shape[0] >= self.capacity:
            gone = self._pieces.popleft()
            self._filled -= gone.rows.shape[0]
            if not gone.counted:  # (nor is anything after it: the totals count nothing left)
                self._totals = None
            elif self._totals is not None:
                total, squares = self._totals
                gone_total, gone_squares = _sums(gone.rows, total.device)
                self._totals = (total - gone_total, squares - gone_squares)

    def score(self) -> float | None:
        """``collapse_score`` of the rows, which are unit already: from per-channel sums, which
        is far cheaper than ``std`` across rows."""
        if min(self._filled, self.capacity) < 4 or self._pieces[-1].rows.shape[1] < 2:
            return None
        if self._totals is None or self._added >= self.capacity:
            self._make_totals()
        else:
            self._count_new_pieces()
        total, squares = self._totals  # type: ignore[misc]
        n, width = min(self._filled, self.capacity), self._pieces[-1].rows.shape[1]
        excess = self._filled - self.capacity
        if excess > 0:  # the oldest piece is partly older than the ring
            older_total, older_squares = _sums(self._pieces[0].rows[:excess], total.device)
            total, squares = total - older_total, squares - older_squares
        variance = torch.addcmul(squares, total, total, value=-1.0 / n).clamp_min(0) / (n - 1)
        return math.sqrt(width) * float(variance.sqrt().mean())

    def _make_totals(self) -> None:
        self._totals = _sums(self._joined(), self._pieces[-1].rows.device)
        for piece in self._pieces:
            piece.counted = True
        self._added = 0

    def _joined(self) -> torch.Tensor:
        """Every piece's rows, the oldest piece's whole (float64, on the device of the newest)."""
        device = self._pieces[-1].rows.device
        return torch.cat([piece.rows.to(device=device, dtype=torch.float64) for piece in self._pieces])

    def _count_new_pieces(self) -> None:
        total, squares = self._totals  # type: ignore[misc]
        for piece in reversed(self._pieces):
            if piece.counted:
                break
            piece_total, piece_squares = _sums(piece.rows, total.device)
            total, squares = total + piece_total, squares + piece_squares
            piece.counted = True
            self._added += piece.rows.shape[0]
        self._totals = (total, squares)


# --------------------------------------------------------------------------------------
# Reference functions: exact, one tensor at a time (they read values back as they go)
# --------------------------------------------------------------------------------------


def collapse_score(rows: torch.Tensor) -> float | None:
    """√d · mean per-channel std of the L2-normalised rows: ≈ 1 healthy, → 0 collapsed."""
    if rows.shape[0] < 4 or rows.shape[1] < 2:
        return None
    unit = torch.nn.functional.normalize(rows.to(torch.float64), dim=-1)
    return float(math.sqrt(rows.shape[1]) * unit.std(dim=0).mean())


def sample_vectors(rows: torch.Tensor) -> torch.Tensor:
    """The rows that stand for different samples: finite, non-zero, and not one vector repeated.

    Zero vectors have no direction (zero-norm reports them), non-finite ones are non-finite's,
    and a batch that is a single vector repeated (``q.expand_as(keys)``, ``q.repeat(n, 1)``,
    a query compared with every key) holds one sample, not n: it is kept as one row.
    """
    if rows.shape[0] == 0:
        return rows
    keep = torch.isfinite(rows).all(dim=-1) & (torch.linalg.vector_norm(rows, dim=-1) > 0)
    if not bool(keep.all()):
        rows = rows[keep]
    if rows.shape[0] > 1 and bool((rows == rows[:1]).all()):
        rows = rows[:1]
    return rows


def _mean_offdiagonal_cosine(rows: torch.Tensor) -> float:
    # Σ_i Σ_j u_i·u_j = |Σ_i u_i|², and the diagonal adds n: no n×n Gram matrix needed.
    unit = torch.nn.functional.normalize(rows, dim=-1)
    n = rows.shape[0]
    total = unit.sum(dim=0).square().sum()
    return float((total - n) / (n * (n - 1)))


def common_mode(rows: torch.Tensor) -> tuple[float, float] | None:
    """The common-mode drop of ``rows`` and its standard error for rows without a shared offset.

    The drop is how much the mean cosine between different rows falls once the batch mean is
    removed (beyond the -1/(n-1) that centring alone causes). With few rows in few dimensions
    that mean is noisy: independent rows have pairwise cosines of spread about 1/√d (more when
    the rows use fewer directions), so the mean over n(n-1)/2 pairs has a standard error of that
    spread times √(2/(n(n-1))). The spread is measured on the centred rows (what is left when
    the offset is gone).
    """
    if rows.shape[0] < 4 or rows.shape[1] < 2:
        return None
    rows = rows[:SAMPLE_ROWS].to(torch.float64)
    n = rows.shape[0]
    centred = rows - rows.mean(dim=0, keepdim=True)
    before = _mean_offdiagonal_cosine(rows)
    after = _mean_offdiagonal_cosine(centred)
    # n centred rows sum to zero, so their mean pairwise cosine sits near -1/(n-1) even for
    # independent vectors; only the fall beyond that baseline is a shared offset.
    drop = before - (after + 1.0 / (n - 1))
    unit = torch.nn.functional.normalize(centred, dim=-1)
    pairs = (unit @ unit.T)[~torch.eye(n, dtype=torch.bool, device=unit.device)]
    # The spread measured on a handful of rows is itself noisy; it is never below that of
    # isotropic rows, 1/√d.
    spread = max(float(pairs.std()), 1.0 / math.sqrt(rows.shape[1]))
    return drop, spread * math.sqrt(2.0 / (n * (n - 1)))


def common_mode_drop(rows: torch.Tensor) -> float | None:
    """How much the mean cosine between different rows falls once the batch mean is removed."""
    measured = common_mode(rows)
    return None if measured is None else measured[0]


# --------------------------------------------------------------------------------------
# The same figures, fused, for a batch of arguments of one shape: (A, n, d)
# --------------------------------------------------------------------------------------


def _batch_statistics(values: torch.Tensor, norms: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Of each of a stack of k (n, d) values with their (k, n, 1) norms, two figures, each
    (k, 1, 1): the spread of the unit rows summed over the channels (Σ_c ‖u_c − ū_c‖), and
    |Σ u| over the first ``SAMPLE_ROWS`` rows (``_batch_figures`` makes the collapse score and
    the rows' mean cosine of these on the host); and the unit rows. ``_centred_statistics``
    has the two figures the common-mode drop needs besides."""
    n = values.shape[1]
    unit = values / norms
    unit_sum = unit.sum(dim=1, keepdim=True)
    # Per channel, the norm of the unit rows' deviations from their mean: std across rows, up to
    # the host's division, without var()'s slow reduction across rows. (vector_norm across rows
    # is one op, but its generic kernel is some ten times slower than a sum on large batches.)
    deviations = torch.sub(unit, unit_sum, alpha=1.0 / n)
    if values.numel() <= SMALL:
        spread = torch.linalg.vector_norm(deviations, dim=1, keepdim=True).sum(dim=2, keepdim=True)
    else:
        spread = deviations.square_().sum(dim=1, keepdim=True).sqrt_().sum(dim=2, keepdim=True)
    head_sum = unit_sum if n <= SAMPLE_ROWS else unit[:, :SAMPLE_ROWS].sum(dim=1, keepdim=True)
    return [spread, torch.linalg.vector_norm(head_sum, dim=2, keepdim=True)], unit


def _centred_statistics(values: torch.Tensor) -> list[torch.Tensor]:
    """Of each of a stack of k (n, d) values, of its first ``SAMPLE_ROWS`` rows centred on their
    mean and normalised: |Σ u_c| and the Frobenius norm of their Gram matrix, each (k, 1, 1)."""
    head = values if values.shape[1] <= SAMPLE_ROWS else values[:, :SAMPLE_ROWS]
    rows = head.shape[1]
    centred = torch.sub(head, head.sum(dim=1, keepdim=True), alpha=1.0 / rows)
    centred_unit = centred / torch.linalg.vector_norm(centred, dim=2, keepdim=True)
    if values.shape[0] * rows * rows * values.shape[2] <= SMALL:
        # Elementwise for small batches: a BLAS call may wait on its worker threads.
        gram = (centred_unit.unsqueeze(2) * centred_unit.unsqueeze(1)).sum(dim=3)
    else:
        gram = centred_unit @ centred_unit.mT
    return [
        torch.linalg.vector_norm(centred_unit.sum(dim=1, keepdim=True), dim=2, keepdim=True),
        torch.linalg.vector_norm(gram, dim=(1, 2), keepdim=True),
    ]


def _batch_figures(
    fetched: list[float], n: int, d: int, centred: Callable[[], list[float]]
) -> tuple[float, tuple[float, float] | None] | None:
    """collapse score and (drop, noise) of one argument from its fused figures (``centred`` gives
    the two of ``_centred_statistics`` when they were not fetched with the others), (drop,
    noise) ``None`` where the drop cannot reach the judge's threshold; ``None`` when the
    figures cannot be trusted (the reference functions must decide)."""
    spread, unit_sum = fetched[0], fetched[1]
    score = math.sqrt(d) * spread / d / math.sqrt(max(n - 1, 1))
    if not math.isfinite(score) or score < USABLE_SPREAD:
        return None
    n = min(n, SAMPLE_ROWS)
    pairs = n * (n - 1)
    before = (unit_sum * unit_sum - n) / pairs
    if not before > COMMON_MODE_DROP:
        # n unit vectors have a mean cosine of at least -1/(n-1), so the drop below is at most
        # the rows' own mean cosine: it cannot reach the judge's threshold, and the centred
        # rows are not worth making.
        return score, None
    centred_sum, gram = fetched[2:4] if len(fetched) == 4 else centred()
    if not (math.isfinite(centred_sum) and math.isfinite(gram)):
        return None
    after = (centred_sum * centred_sum - n) / pairs
    drop = before - (after + 1.0 / (n - 1))
    # Off-diagonal entries of the Gram matrix of unit rows: their sum and sum of squares.
    total, squares = centred_sum * centred_sum - n, gram * gram - n
    mean = total / pairs
    variance = max(0.0, (squares - pairs * mean * mean) / (pairs - 1))
    spread_pairs = max(math.sqrt(variance), 1.0 / math.sqrt(d))
    return score, (drop, spread_pairs * math.sqrt(2.0 / pairs))


# --------------------------------------------------------------------------------------
# Autograd, precision
# --------------------------------------------------------------------------------------


GRAPH_PROBE_NODES = 16
_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def _saved_names(node: Any) -> tuple[str, ...]:
    kind = type(node)
    names = _SAVED_NAMES.get(kind)
    if names is None:
        names = _SAVED_NAMES[kind] = tuple(
            name for name in dir(node) if name.startswith("_saved_") and not name.endswith(("_sym_sizes", "_sym_strides"))
        )
    return names


def _graph_freed(node: Any) -> bool:
    """Whether ``backward()`` has already run through this autograd graph (its saved tensors
    are freed). Looks at a few nodes only; a graph without saved tensors counts as live."""
    stack, looked = [node], 0
    while stack and looked < GRAPH_PROBE_NODES:
        current = stack.pop()
        if current is None:
            continue
        looked += 1
        for name in _saved_names(current):
            try:
                getattr(current, name)
            except RuntimeError:  # "Trying to backward through the graph a second time..."
                return True
            except Exception:  # noqa: BLE001 - an attribute we cannot read says nothing
                continue
        stack.extend(following for following, _ in getattr(current, "next_functions", ()))
    return False


def graph_live_now(x: torch.Tensor) -> bool:
    """Whether ``x`` carries autograd history whose graph ``backward()`` has not run through yet."""
    return x.grad_fn is not None and not _graph_freed(x.grad_fn)


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


def _queue_precision(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float, result: Any, transfer: HostTransfer) -> int | None:
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
    got = result.detach().reshape(-1).index_select(0, picks).to(torch.float64)
    both_nan = torch.isnan(exact) & torch.isnan(got)
    return transfer.scalars(torch.where(both_nan, torch.zeros_like(exact), (exact - got).abs()).max())


def _deviation(exact: list[float], got: list[float]) -> float:
    """max |exact − got|, a NaN on one side only being infinitely far."""
    worst = 0.0
    for e, g in zip(exact, got):
        if e != e or g != g:
            if not (e != e and g != g):
                return math.inf
            continue
        worst = max(worst, abs(e - g))
    return worst


# --------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------


def _fingerprintable(x: Any) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.layout == torch.strided
        and not x.is_meta
        and x.numel() > 1
        and not x.dtype.is_complex  # rare; not worth a second fingerprint path
    )


def _storage_ref(x: torch.Tensor) -> weakref.ref | None:
    try:
        return weakref.ref(x.untyped_storage())
    except (RuntimeError, TypeError, NotImplementedError):
        return None


@dataclass(slots=True)
class _ArgPlan:
    """What was queued for one argument."""

    x: torch.Tensor
    values: ArgValues | None
    """Capture's rows, when the batch figures can use them (a float tensor, the dim its own)."""
    sample_at: tuple[int, int, int] | None = None
    """(slot, offset, count) of the fingerprint's sample of values."""
    reduced_in: torch.dtype | None = None
    """The dtype the fingerprint's mean and std were reduced in."""
    stats_slot: int | None = None
    """Mean, std, min and max of the tensor in its own order, when capture's rows are not."""
    figures_at: tuple[int, int, int] | None = None
    """(slot, offset, count) of the batch figures (``_batch_statistics``, then
    ``_centred_statistics`` where they were queued too)."""
    batch: tuple[torch.Tensor, int] | None = None
    """The (k, n, d) stack the batch figures were made of, and this argument's place in it."""
    host_rows_slot: int | None = None
    unit: torch.Tensor | None = None
    """The unit rows the batch figures were made of, when they were."""


def _on_device(values: torch.Tensor) -> bool:
    """Whether reading ``values`` back would wait for a device. Then everything is queued on the
    one transfer, even figures that matter only sometimes (the centred ones), and the ring of a
    site with few rows lives on the host; on the CPU a figure is made only where it matters."""
    return not values.is_cpu


def _centred_figures(plan: _ArgPlan) -> list[float]:
    """``_centred_statistics`` of one argument, read back at once (on the CPU that costs nothing)."""
    values, position = plan.batch  # type: ignore[misc]
    return torch.cat(_centred_statistics(values[position : position + 1]), dim=2).view(-1).tolist()


class PendingEvidence:
    """One call's evidence, queued on a transfer; ``finish()`` once it has been fetched."""

    def __init__(
        self,
        collector: EvidenceCollector,
        step: int,
        site: str,
        exprs: tuple[str, str],
        x1: Any,
        x2: Any,
        dim: int,
        eps: float,
        result: Any,
        pair: PendingPair,
        transfer: HostTransfer,
        fresh: tuple[bool, bool],
        graph_live: tuple[bool, bool] | None = None,
    ) -> None:
        self.collector, self.step, self.site, self.exprs = collector, step, site, exprs
        self.fresh = fresh
        self.graph_live = graph_live
        self.dim, self.eps, self.result, self.pair, self.transfer = dim, eps, result, pair, transfer
        self.tensors = (x1, x2)
        copies = pair.values
        self.values = (x1, x2) if copies is None else (copies[0], copies[1])
        """Where the arguments' values are read: host copies where capture made them, else the
        tensors themselves (which are always what shape, storage and autograd are read from)."""
        self.result_values = result if copies is None else copies[2]
        self.active = isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
        if not self.active:
            return
        if torch.is_grad_enabled():
            with torch.no_grad():
                self._queue(x1, x2)
        else:  # the agent's capture is under no_grad already
            self._queue(x1, x2)

    def _queue(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        dim, pair = self.dim, self.pair
        # torch reads dim against the broadcast shape (its rank is the larger one).
        ndim = max(x1.dim(), x2.dim(), 1)
        self.d = reduced_dim(dim, ndim) if -ndim <= dim < ndim else None
        plans = []
        for x, values in zip((x1, x2), pair.args):
            usable = (
                self.d is not None
                and values is not None
                and x.is_floating_point()
                and x.dim() > 0
                and -self.d <= x.dim()
            )
            plans.append(_ArgPlan(x, values if usable else None))
        self.plans = plans
        self.stacked_unit: torch.Tensor | None = None
        """Both arguments' unit rows as one (2, n, d), when the batch figures were made together."""
        stacked = pair.stacked
        first, second = plans
        if (
            stacked is not None
            and first.values is not None
            and second.values is not None
            and pair.d == -1  # capture's rows are the tensors in their own order
            and stacked[0].shape[1] >= 4
            and stacked[0].shape[2] >= 2
            and _fingerprintable(x1)
            and _fingerprintable(x2)
        ):
            self._queue_stacked(*stacked)
        else:
            self._queue_each()
        self._queue_precision(x1, x2)

    def _queue_stacked(self, values: torch.Tensor, norms: torch.Tensor) -> None:
        """Both arguments as capture stacked them: their batch figures in one queued vector (their
        fingerprints' samples came with capture's)."""
        self.stacked_unit = self._queue_figures(self.plans, values, norms)
        for plan in self.plans:
            plan.sample_at = plan.values.sample_at  # type: ignore[union-attr]
            plan.reduced_in = plan.values.dtype  # type: ignore[union-attr]

    def _queue_figures(self, group: list[_ArgPlan], values: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """The batch figures of a group of arguments stacked as (k, n, d) in one queued vector;
        returns their unit rows."""
        if values.shape[1] > COLLAPSE_ROWS:
            values, norms = values[:, :COLLAPSE_ROWS], norms[:, :COLLAPSE_ROWS]
        figures, unit = _batch_statistics(values, norms)
        if _on_device(values):
            figures += _centred_statistics(values)
        slot = self.transfer.vector(torch.cat(figures, dim=2))
        count = len(figures)
        for position, plan in enumerate(group):
            plan.figures_at = (slot, count * position, count)
            plan.batch = (values, position)
        return unit

    def _queue_each(self) -> None:
        transfer, plans = self.transfer, self.plans
        for plan, read in zip(plans, self.values):
            x, values = plan.x, plan.values
            if values is not None and _fingerprintable(x):
                if self.pair.d == -1 or x.dim() <= 1 or -self.pair.d > x.dim():
                    # Capture's rows are the tensor in its own order: their statistics and
                    # sample serve.
                    plan.sample_at, plan.reduced_in = values.sample_at, values.dtype
                    continue
                # Rows along another dim are the values reordered: fingerprint the tensor in
                # its own order, so that it is recognised at a site with another dim.
                flat = read.detach().reshape(-1).to(working_dtype(x, x.numel())).contiguous()
                std, mean = torch.std_mean(flat)
                low, high = torch.aminmax(flat)
                plan.stats_slot = transfer.scalars(mean, std, low, high)
                step = max(1, flat.shape[0] // FINGERPRINT_SAMPLE)
                sample = flat[: step * FINGERPRINT_SAMPLE : step]
                plan.sample_at, plan.reduced_in = (transfer.vector(sample), 0, sample.shape[0]), flat.dtype

        # Collapse and common mode of each argument with ≥ 4 rows: both at once when they can be.
        batched = [p for p in plans if p.values is not None and p.values.rows >= 4 and p.values.width >= 2]
        if (
            len(batched) == 2
            and (batched[0].values.rows, batched[0].values.width) == (batched[1].values.rows, batched[1].values.width)
            and batched[0].values.rows * batched[0].values.width <= SMALL
        ):
            first, second = batched[0].values, batched[1].values
            if first.values.dtype == second.values.dtype and first.values.device == second.values.device:
                groups = [batched]
            else:
                groups = [[batched[0]], [batched[1]]]
        else:
            groups = [[p] for p in batched]
        for group in groups:
            if len(group) > 1 and self.pair.stacked is not None:
                values, norms = self.pair.stacked  # capture stacked them already
            elif len(group) > 1:
                values = torch.stack([p.values.values for p in group])
                norms = torch.stack([p.values.norms for p in group])
            else:
                values, norms = group[0].values.values.unsqueeze(0), group[0].values.norms.unsqueeze(0)
            unit = self._queue_figures(group, values, norms)
            for position, plan in enumerate(group):
                plan.unit = unit[position]

        # Arguments of fewer than 4 rows feed the site's ring: their rows come back with the
        # transfer, to be looked at on the host. On the CPU their unit rows are made here (both
        # at once when capture stacked them); on a device, on the host from the rows fetched,
        # so that the ring lives on the host and scoring it never waits for the device.
        few = [p for p in plans if p.values is not None and p.values.rows < 4 and p.values.values.numel() <= RING_ON_HOST]
        if len(few) == 2 and self.pair.stacked is not None and not _on_device(self.pair.stacked[0]):
            values, norms = self.pair.stacked
            unit = values / norms
            for index, plan in enumerate(few):
                plan.unit = unit[index]
        for plan in few:
            values = plan.values
            if plan.unit is None and not _on_device(values.values):
                plan.unit = values.values / values.norms
            plan.host_rows_slot = transfer.vector(values.values)

    def _queue_precision(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        transfer, plans = self.transfer, self.plans
        self.precision_slot = None
        self.exact_slot = None
        first, second = plans
        similarity_on_host = self.pair.cos_slots.get("all") is not None
        rows = first.values.rows if first.values is not None else 0
        if (
            similarity_on_host
            and first.values is not None
            and second.values is not None
            and x1.shape == x2.shape
            and self.d == -1
            and isinstance(self.result, torch.Tensor)
            and self.result.numel() == rows
            and first.values.dtype == second.values.dtype == torch.float64
        ):
            # The float64 recomputation from the unit rows already at hand, compared on the host.
            if self.stacked_unit is not None and self.stacked_unit.shape[1] == rows:
                products = self.stacked_unit.prod(dim=0)
            else:
                units = []
                for plan in (first, second):
                    unit = plan.unit
                    if unit is None or unit.shape[0] != rows:
                        unit = plan.values.values / plan.values.norms
                    units.append(unit)
                products = units[0] * units[1]
            self.exact_slot = transfer.vector(products.sum(dim=-1))
        else:
            self.precision_slot = _queue_precision(*self.values, self.dim, self.eps, self.result_values, transfer)

    # -- after the fetch ----------------------------------------------------------------

    def finish(self, equal_pair: bool) -> Evidence:
        evidence = Evidence(eps=self.eps)
        if not self.active:
            return evidence
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._finish(evidence, equal_pair)
        return self._finish(evidence, equal_pair)

    def _fingerprint(self, index: int) -> _Print | None:
        plan = self.plans[index]
        if plan.sample_at is None:
            return None
        stats = self.transfer[plan.stats_slot] if plan.stats_slot is not None else self.pair.first_pass(index)
        assert stats is not None
        mean, std, low, high = stats[:4]
        slot, offset, count = plan.sample_at
        key = [low, high, *self.transfer[slot][offset : offset + count]]
        if mean != mean or std != std:  # a NaN or an infinity somewhere: maybe among the key's values
            # NaN never equals NaN; a sentinel keeps fingerprints with NaN comparable.
            key = [v if v == v else _NAN_SENTINEL for v in key]
        return _Print(tuple(key), mean, std, MOMENTS_TOLERANCE.get(plan.reduced_in, MOMENTS_TOLERANCE[torch.float32]))

    def _finish(self, evidence: Evidence, equal_pair: bool) -> Evidence:
        collector, transfer = self.collector, self.transfer
        prints = [self._fingerprint(i) for i in range(2)]
        constant = [print_ is not None and print_.constant for print_ in prints]
        self.usable = [self._usable(0), self._usable(1)]
        for index, x in enumerate(self.tensors):
            if prints[index] is None or constant[index] or self.fresh[index]:
                continue
            live = self.graph_live[index] if self.graph_live is not None else None
            match = collector._stale_match(index, x, prints[index], self.site, live, self._copy(index), self._requires_grad(index))
            if match is not None:
                evidence.stale.append(match)

        samples: list[Any] = [None, None]
        """Each argument's sample vectors for the ring (``_BATCH_UNITS``: the unit rows its batch
        figures were made of); ``unit`` says whether already normalised."""
        unit = [False, False]
        batch: list[float | None] = [None, None]
        measured: list[tuple[float, float]] = []
        for index, plan in enumerate(self.plans):
            if self.d is None or not self._has_rows(plan.x):
                continue
            figures = None
            if plan.figures_at is not None and self.usable[index]:
                slot, offset, count = plan.figures_at
                rows, width = plan.values.rows, plan.values.width  # type: ignore[union-attr]
                figures = _batch_figures(
                    transfer[slot][offset : offset + count], min(rows, COLLAPSE_ROWS), width, functools.partial(_centred_figures, plan)
                )
            if figures is not None:
                batch[index] = figures[0]
                if figures[1] is not None:
                    measured.append(figures[1])
                samples[index], unit[index] = _BATCH_UNITS, True
            elif plan.host_rows_slot is not None:
                # Fewer than 4 rows: no batch figure; they only feed the ring, already unit.
                samples[index], unit[index] = self._few_unit_rows(plan), True
            else:
                rows = sample_vectors(_rows(self.values[index].detach(), self.d)[:COLLAPSE_ROWS])
                samples[index] = rows
                batch[index] = collapse_score(rows)
                reference = common_mode(rows)
                if reference is not None:
                    measured.append(reference)
        evidence.batch_collapse = batch
        if measured:
            # The argument whose offset stands out most clearly above its own noise.
            drop, noise = max(measured, key=lambda m: m[0] - COMMON_MODE_CONFIDENCE * m[1])
            evidence.common_mode_drop, evidence.common_mode_noise = drop, noise

        ring = collector._ring(self.site)
        stale_args = {m.arg for m in evidence.stale}
        # Only vectors of new samples count: not a recycled partner, not a copy of the anchor.
        new = [
            index for index, rows in enumerate(samples) if rows is not None and index not in stale_args and not (index == 1 and equal_pair)
        ]
        both = self.stacked_unit
        if len(new) == 2 and both is not None and unit == [True, True] and 2 * both.shape[1] <= ring.capacity:
            ring.push(both.view(-1, both.shape[2]))  # the first's rows, then the second's
            new = []
        for index in new:
            rows = samples[index]
            if rows is _BATCH_UNITS:
                rows = self._unit_rows(index)
            rows = rows[: ring.capacity]  # type: ignore[index]
            ring.push(rows if unit[index] else torch.nn.functional.normalize(rows.to(torch.float32), dim=-1))
        if all(score is None for score in batch):
            evidence.ring_collapse = ring.score()

        evidence.precision_deviation = self._precision()

        step_seen = []
        for index, x in enumerate(self.tensors):
            if prints[index] is None or constant[index]:
                continue
            step_seen.append(
                _Seen(
                    self.step, index, self.exprs[index], _storage_ref(x), tuple(x.shape), x.dtype, prints[index],
                    self._requires_grad(index), x.storage_offset(), tuple(x.stride()), self._copy(index),
                )
            )
        collector._remember(self.site, step_seen)
        return evidence

    def _requires_grad(self, index: int) -> bool:
        """Whether an argument required grad at the call (read then where capture described it:
        a step summarised later gets views of the tensors without autograd)."""
        described = self.pair.described
        return bool(described[index]["requires_grad"]) if described is not None else self.tensors[index].requires_grad

    def _copy(self, index: int) -> torch.Tensor | None:
        """An argument's values copied to the host at the call, where capture made them."""
        return self.values[index] if self.pair.values is not None else None

    def _unit_rows(self, index: int) -> torch.Tensor | None:
        """The unit rows an argument's batch figures were made of."""
        if self.stacked_unit is not None:
            return self.stacked_unit[index]
        return self.plans[index].unit

    def _has_rows(self, x: torch.Tensor) -> bool:
        """Whether the reference would look at this argument's rows at all."""
        if x.layout != torch.strided or x.is_meta or x.numel() == 0 or x.dim() == 0:
            return False
        if x.is_complex() or not x.is_floating_point():
            return False
        assert self.d is not None
        return -self.d <= x.dim()

    def _usable(self, index: int) -> bool:
        """Every row finite and of a norm normalisation leaves alone: all of them are samples."""
        stats = self.pair.first_pass(index)
        return stats is not None and all(map(math.isfinite, stats)) and stats[4] > 1e-12

    def _few_unit_rows(self, plan: _ArgPlan) -> torch.Tensor | None:
        """``sample_vectors`` of an argument's few rows, L2-normalised: which rows to keep is
        decided on the host, where the rows came back (for a handful of values that is cheaper
        than any tensor op); on the CPU the unit rows were made with the capture."""
        assert plan.host_rows_slot is not None and plan.values is not None
        flat = self.transfer[plan.host_rows_slot]
        width = plan.values.width
        rows = [flat[i : i + width] for i in range(0, len(flat), width)]
        kept = [i for i, row in enumerate(rows) if any(row) and all(map(math.isfinite, row))]
        if len(kept) > 1 and all(rows[i] == rows[kept[0]] for i in kept[1:]):
            kept = kept[:1]  # one vector repeated is one sample
        if not kept:
            return None
        if plan.unit is None:  # rows on a device: the ring is on the host
            return torch.tensor([[v / math.hypot(*rows[i]) for v in rows[i]] for i in kept], dtype=torch.float32)
        return plan.unit if len(kept) == len(rows) else plan.unit[kept]

    def _precision(self) -> float | None:
        if self.exact_slot is not None:
            got = self.pair.similarity_values()
            assert got is not None
            usable = self.usable[0] and self.usable[1]
            if usable and all(self.pair.first_pass(i)[4] >= self.eps for i in range(2)):  # type: ignore[index]
                return _deviation(self.transfer[self.exact_slot], got)
            # Norms below eps (torch clamps them) or non-finite values: recompute as torch does.
            extra = HostTransfer()
            slot = _queue_precision(*self.values, self.dim, self.eps, self.result_values, extra)  # type: ignore[arg-type]
            if slot is None:
                return None
            extra.fetch()
            value = extra[slot][0]
            return value if value == value else math.inf
        if self.precision_slot is None:
            return None
        value = self.transfer[self.precision_slot][0]
        return value if value == value else math.inf


class EvidenceCollector:
    def __init__(self, keep_steps: int = 8, ring_rows: int = 256) -> None:
        self.keep_steps = keep_steps
        self.ring_rows = ring_rows
        self._seen: deque[tuple[str, list[_Seen]]] = deque(maxlen=keep_steps)
        """Per recent step: its call site and its arguments."""
        self._prints: dict[tuple[float, ...], int] = {}
        """How many arguments in ``_seen`` have each fingerprint key: most arguments were never
        seen before, and one look-up says so."""
        self._rings: dict[str, _SiteRing] = {}

    def _ring(self, site: str) -> _SiteRing:
        ring = self._rings.get(site)
        if ring is None:
            ring = self._rings[site] = _SiteRing(self.ring_rows)
        return ring

    def queue(
        self,
        step: int,
        site: str,
        exprs: tuple[str, str],
        x1: Any,
        x2: Any,
        dim: int,
        eps: float,
        result: Any,
        pair: PendingPair,
        transfer: HostTransfer,
        fresh: tuple[bool, bool] = (False, False),
        graph_live: tuple[bool, bool] | None = None,
    ) -> PendingEvidence:
        """Queue this call's evidence on ``transfer`` (next to ``pair``); ``finish`` after the fetch.

        ``fresh[i]``: argument i is the output of a module call made since the previous
        intercepted call — recomputed now, so equal values to an earlier step are not a
        recycled partner (a deterministic model embedding the same item again).
        ``graph_live``: ``graph_live`` of each argument, read at the call, where this evidence
        is queued later (a ``backward()`` in between frees the graph); else read when needed."""
        return PendingEvidence(self, step, site, exprs, x1, x2, dim, eps, result, pair, transfer, fresh, graph_live)

    def observe(
        self,
        step: int,
        site: str,
        exprs: tuple[str, str],
        x1: Any,
        x2: Any,
        dim: int,
        eps: float,
        equal_pair: bool,
        result: Any,
        fresh: tuple[bool, bool] = (False, False),
    ) -> Evidence:
        """The evidence for one call, on its own (the agent queues it with the capture instead);
        ``fresh`` as for ``queue``."""
        transfer = HostTransfer()
        pair = queue_pair(x1, x2, dim, result, exprs, transfer)
        pending = self.queue(step, site, exprs, x1, x2, dim, eps, result, pair, transfer, fresh)
        transfer.fetch()
        return pending.finish(equal_pair)

    def _remember(self, site: str, step_seen: list[_Seen]) -> None:
        if self.keep_steps <= 0:
            return
        prints = self._prints
        if len(self._seen) == self.keep_steps:
            for seen in self._seen[0][1]:
                key = seen.fingerprint.key
                left = prints[key] - 1
                if left:
                    prints[key] = left
                else:
                    del prints[key]
        self._seen.append((site, step_seen))
        for seen in step_seen:
            key = seen.fingerprint.key
            prints[key] = prints.get(key, 0) + 1

    def _stale_match(
        self, index: int, x: torch.Tensor, print_: _Print, site: str, live: bool | None = None, copy: torch.Tensor | None = None,
        requires_grad: bool | None = None,
    ) -> StaleMatch | None:
        """Whether ``x`` is an argument of a previous batch, seen at an earlier step.

        Reuse within the current batch is not staleness: an anchor compared with a positive and
        then with a negative is the same tensor at two consecutive steps. Two signs tell that
        apart without knowing where batches begin:

        - ``x`` carries autograd history whose graph is still whole: it belongs to the graph
          being built now. (A tensor kept across ``backward()`` has its graph's saved tensors
          freed, and is reported: the next backward through it will fail.)
        - the earlier step is in the current pass of the loop: this call site has not been
          reached since that step (a loop comes back to the same call on its next batch).

        A match in other memory is confirmed element by element: against the earlier argument's
        values as they were at its call where both were copied to the host (``copy``: ``x``'s),
        else against the earlier memory where it is still alive, on the script's thread (a step
        summarised from a copy may be summarised later, on the agent's own thread, which never
        touches the device): else the fingerprint decides.

        ``live``, ``requires_grad``: ``graph_live(x)`` and ``x.requires_grad`` as they were at the
        call, where they were read then.
        """
        if print_.key not in self._prints:
            return None
        shape = tuple(x.shape)
        storage: Any = None
        graph_live: bool | None = None
        site_reached = False
        for seen_site, seen_step in reversed(self._seen):
            site_reached = site_reached or seen_site == site
            if not site_reached:
                continue
            for seen in seen_step:
                if seen.shape != shape or seen.dtype != x.dtype or seen.fingerprint.key != print_.key:
                    continue
                if not seen.fingerprint.moments_agree(print_):
                    continue
                if graph_live is None:  # looked at only once a fingerprint matches
                    graph_live = live if live is not None else graph_live_now(x)
                    try:
                        storage = x.untyped_storage()
                    except (RuntimeError, NotImplementedError):
                        storage = None
                if graph_live:
                    return None
                earlier = seen.storage() if seen.storage is not None else None
                same_memory = (
                    earlier is not None
                    and storage is not None
                    and earlier is storage
                    and seen.storage_offset == x.storage_offset()
                    and seen.strides == tuple(x.stride())
                )
                if not same_memory and copy is not None and seen.values is not None:
                    then, now = seen.values, copy
                    if then.dtype != now.dtype:  # each promoted with what travelled beside it: compared exactly
                        then, now = then.double(), now.double()
                    if not torch.equal(then, now):
                        continue
                elif not same_memory and copy is None and earlier is not None and earlier.device == x.device:
                    # The earlier tensor's memory still exists: confirm the values exactly.
                    try:
                        view = torch.empty(0, dtype=seen.dtype, device=x.device).set_(
                            earlier, seen.storage_offset, seen.shape, seen.strides
                        )
                        equal = torch.equal(view, x.detach())
                    except RuntimeError:  # the storage was resized since: trust the fingerprint
                        equal = True
                    if not equal:
                        continue
                return StaleMatch(
                    arg=index,
                    earlier_step=seen.step,
                    earlier_arg=seen.arg,
                    earlier_expr=seen.expr,
                    same_memory=same_memory,
                    detached=seen.had_grad and not (x.requires_grad if requires_grad is None else requires_grad),
                )
        return None
