"""Batch statistics at a call site: do the vectors of different samples point the same way?

The collapse score (√d · mean per-channel std of the L2-normalised rows: ≈ 1 healthy, → 0
collapsed) and the common-mode drop (how much the mean cosine between different rows falls
once the batch mean is subtracted) of one batch come from a few fused reductions
(``batch_statistics``, read back by ``batch_figures``), with reference functions for the
batches those cannot be trusted on. A site whose calls carry fewer than 4 rows each keeps a
``SiteRing`` of its recent unit rows and is scored across steps instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import torch

from cossim_tui.agent.summaries import SMALL
from cossim_tui.diagnostics.judge import COMMON_MODE_DROP

SAMPLE_ROWS = 64
"""Rows the common-mode figures and the precision check look at, at most."""
COLLAPSE_ROWS = 256
"""Rows a batch's collapse score looks at, at most."""
RING_ON_HOST = 4096
"""An argument of fewer than 4 rows (and at most this many values) feeds its site's ring: its
rows come back with the transfer, and off the CPU the ring is made of them on the host, so
scoring it needs no device."""
KEPT_SUMS_WIDTH = 256
"""A ring keeps each counted piece's sums, to take them back out when it leaves, for vectors of up
to this many channels: 4 KB a piece at most (16 bytes a channel), where the sums of one wide row
would outweigh the row itself."""
USABLE_SPREAD = 1e-6
"""Below this collapse score the fused statistics are not trusted (a vector repeated n times
is one sample, not a collapsed batch): the reference functions decide."""


class _Piece:
    """Rows pushed at once onto a ring, and whether the ring's totals count them yet."""

    __slots__ = ("counted", "rows", "sums")

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.counted = False
        self.sums: tuple[torch.Tensor, torch.Tensor] | None = None
        """``_sums`` of the rows where the totals counted this piece alone: taken back out as
        they are when it leaves, rather than made again."""


def _sums(rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sum and sum of squares of ``rows``, in float64 on ``device``."""
    rows = rows.to(device=device, dtype=torch.float64)
    return rows.sum(dim=0), (rows * rows).sum(dim=0)


class SiteRing:
    """The last ``capacity`` unit rows of new vectors at one call site.

    A push keeps the pushed tensor (the agent's own unit rows, never the script's tensors) rather
    than copying it: the ring is read only at a site whose steps have no batch of their own to
    score. Its score needs only the rows' per-channel sum and sum of squares, kept as running
    totals: a score counts the pieces pushed since the one before, a counted piece that leaves
    is taken back out (by the sums it was counted with; for wide vectors, made again from its
    rows), and every ``capacity`` rows the totals are made again from the rows themselves, so
    that rounding cannot build up. A site with one row a call (pairs of single vectors) thus
    costs a few tiny reductions a step, not a pass over the whole ring."""

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
                gone_total, gone_squares = gone.sums or _sums(gone.rows, total.device)
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
        # √(n − 1) times each channel's std; the division is the host's, after the mean.
        spread = torch.addcmul(squares, total, total, value=-1.0 / n).clamp_min_(0).sqrt_()
        return math.sqrt(width) * float(spread.mean()) / math.sqrt(n - 1)

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
            if piece.rows.shape[1] <= KEPT_SUMS_WIDTH:
                piece.sums = (piece_total, piece_squares)
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


def batch_statistics(values: torch.Tensor, norms: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Of each of a stack of k (n, d) values with their (k, n, 1) norms, two figures, each
    (k, 1, 1): the spread of the unit rows summed over the channels (Σ_c ‖u_c − ū_c‖), and
    |Σ u| over the first ``SAMPLE_ROWS`` rows (``batch_figures`` makes the collapse score and
    the rows' mean cosine of these on the host); and the unit rows. ``centred_statistics``
    has the two figures the common-mode drop needs besides."""
    n = values.shape[1]
    unit = values / norms
    unit_sum = unit.sum(dim=1, keepdim=True)
    # Per channel, the norm of the unit rows' deviations from their mean: std across rows, up to
    # the host's division, without var()'s slow reduction across rows. (vector_norm across rows
    # is one op, but its generic kernel is slower than these three at every size but the
    # smallest: 17 against 6 µs for one (8, 64) pair, 420 against 27 µs for 64 of them.)
    deviations = torch.sub(unit, unit_sum, alpha=1.0 / n)
    spread = deviations.square_().sum(dim=1, keepdim=True).sqrt_().sum(dim=2, keepdim=True)
    head_sum = unit_sum if n <= SAMPLE_ROWS else unit[:, :SAMPLE_ROWS].sum(dim=1, keepdim=True)
    return [spread, torch.linalg.vector_norm(head_sum, dim=2, keepdim=True)], unit


def centred_statistics(values: torch.Tensor) -> list[torch.Tensor]:
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


def may_drop(unit_sum: float, rows: int) -> bool:
    """Whether the common-mode drop of ``rows`` unit rows (at most ``SAMPLE_ROWS``) whose sum has
    norm ``unit_sum`` could reach the judge's threshold. n unit vectors have a mean cosine of at
    least -1/(n-1), so the drop is at most the rows' own mean cosine: below the threshold, the
    centred rows are not worth making."""
    n = min(rows, SAMPLE_ROWS)
    return n > 1 and (unit_sum * unit_sum - n) / (n * (n - 1)) > COMMON_MODE_DROP


def batch_figures(
    fetched: list[float], n: int, d: int, centred: Callable[[], list[float]]
) -> tuple[float, tuple[float, float] | None] | None:
    """collapse score and (drop, noise) of one argument from its fused figures (``centred`` gives
    the two of ``centred_statistics`` when they were not fetched with the others), (drop,
    noise) ``None`` where the drop cannot reach the judge's threshold; ``None`` when the
    figures cannot be trusted (the reference functions must decide)."""
    spread, unit_sum = fetched[0], fetched[1]
    score = math.sqrt(d) * spread / d / math.sqrt(max(n - 1, 1))
    if not math.isfinite(score) or score < USABLE_SPREAD:
        return None
    n = min(n, SAMPLE_ROWS)
    pairs = n * (n - 1)
    before = (unit_sum * unit_sum - n) / pairs
    if not may_drop(unit_sum, n):
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



class SiteRings:
    """One ``SiteRing`` per call site, made when the site is first seen."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, SiteRing] = {}

    def at(self, site: str) -> SiteRing:
        ring = self._rings.get(site)
        if ring is None:
            ring = self._rings[site] = SiteRing(self.capacity)
        return ring
