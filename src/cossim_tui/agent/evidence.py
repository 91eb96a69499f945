"""The tensor-side facts the judges need beyond one step's summary, and the history behind them.

Judging is pure (``diagnostics.judge``), but some questions can only be answered next to the
tensors: is this argument the memory, or the values, of an argument seen a few steps ago?
Do the vectors of different samples point the same way? Does a float64 recomputation agree?
This module answers them with bounded work and bounded memory:

- the last ``keep_steps`` steps' arguments are remembered by a weak reference to their
  storage (so nothing is kept alive) and a value fingerprint (sums in float64 and a strided
  sample); a fingerprint match is confirmed exactly whenever the earlier storage still lives;
- each call site keeps a ring of at most ``ring_rows`` L2-normalised rows for the collapse
  score across steps;
- precision and common-mode checks use at most ``SAMPLE_ROWS`` rows.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from cossim_tui.agent.capture import _rows, reduced_dim
from cossim_tui.diagnostics.judge import COMMON_MODE_CONFIDENCE, Evidence, StaleMatch

SAMPLE_ROWS = 64
COLLAPSE_ROWS = 256
FINGERPRINT_SAMPLE = 64
_NAN_SENTINEL = -1.2345678901234567e300


@dataclass
class _Seen:
    """One argument of an earlier step, remembered without keeping it alive."""

    step: int
    arg: int
    expr: str
    storage: weakref.ref | None
    shape: tuple[int, ...]
    dtype: torch.dtype
    fingerprint: tuple[float, ...]
    had_grad: bool
    storage_offset: int
    strides: tuple[int, ...]


@dataclass
class _SiteRing:
    rows: deque = field(default_factory=deque)
    count: int = 0


def _fingerprint(x: torch.Tensor) -> tuple[float, ...]:
    flat = x.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    flat = flat.to(torch.float64)
    step = max(1, flat.numel() // FINGERPRINT_SAMPLE)
    sample = flat[::step][:FINGERPRINT_SAMPLE]
    values = torch.cat([torch.stack([flat.sum(), flat.square().sum()]), sample]).tolist()
    # NaN never equals NaN; a sentinel keeps fingerprints with NaN comparable.
    return tuple(v if v == v else _NAN_SENTINEL for v in values)


def _fingerprintable(x: Any) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.layout == torch.strided
        and x.device.type != "meta"
        and x.numel() > 1
        and not x.dtype.is_complex  # rare; not worth a second fingerprint path
    )


def _storage_ref(x: torch.Tensor) -> weakref.ref | None:
    try:
        return weakref.ref(x.untyped_storage())
    except (RuntimeError, TypeError, NotImplementedError):
        return None


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


GRAPH_PROBE_NODES = 16


def _graph_freed(node: Any) -> bool:
    """Whether ``backward()`` has already run through this autograd graph (its saved tensors
    are freed). Looks at a few nodes only; a graph without saved tensors counts as live."""
    stack, looked = [node], 0
    while stack and looked < GRAPH_PROBE_NODES:
        current = stack.pop()
        if current is None:
            continue
        looked += 1
        for name in dir(current):
            if name.startswith("_saved_") and not name.endswith(("_sym_sizes", "_sym_strides")):
                try:
                    getattr(current, name)
                except RuntimeError:  # "Trying to backward through the graph a second time..."
                    return True
                except Exception:  # noqa: BLE001 - an attribute we cannot read says nothing
                    continue
        stack.extend(following for following, _ in getattr(current, "next_functions", ()))
    return False


def _original_cosine() -> Any:
    # The public name may be our own wrapper; judging must not be intercepted.
    cosine = torch.nn.functional.cosine_similarity
    return getattr(cosine, "__cossim_tui_original__", cosine)


class EvidenceCollector:
    def __init__(self, keep_steps: int = 8, ring_rows: int = 256) -> None:
        self.keep_steps = keep_steps
        self.ring_rows = ring_rows
        self._seen: deque[tuple[str, list[_Seen]]] = deque(maxlen=keep_steps)
        """Per recent step: its call site and its arguments."""
        self._rings: dict[str, _SiteRing] = {}

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
        """``fresh[i]``: argument i is the output of a module call made since the previous
        intercepted call — recomputed now, so equal values to an earlier step are not a
        recycled partner (a deterministic model embedding the same item again)."""
        evidence = Evidence(eps=eps)
        tensors = (x1, x2)
        if not all(isinstance(x, torch.Tensor) for x in tensors):
            return evidence
        with torch.no_grad():
            prints = [(_fingerprint(x) if _fingerprintable(x) else None) for x in tensors]
            constant = [
                p is not None and isinstance(x, torch.Tensor) and bool((x.detach() == x.detach().reshape(-1)[0]).all())
                for x, p in zip(tensors, prints)
            ]
            for index, x in enumerate(tensors):
                if prints[index] is None or constant[index] or fresh[index]:
                    continue
                match = self._stale_match(index, x, prints[index], site)
                if match is not None:
                    evidence.stale.append(match)

            # torch reads dim against the broadcast shape (its rank is the larger one).
            ndim = max(x1.dim(), x2.dim(), 1)
            rows = [self._rows(x, reduced_dim(dim, ndim)) for x in tensors] if -ndim <= dim < ndim else [None, None]
            samples = [sample_vectors(r[:COLLAPSE_ROWS]) if r is not None else None for r in rows]
            evidence.batch_collapse = [collapse_score(r[:COLLAPSE_ROWS]) if r is not None else None for r in samples]
            measured = [m for m in (common_mode(r) if r is not None else None for r in samples) if m is not None]
            if measured:
                # The argument whose offset stands out most clearly above its own noise.
                drop, noise = max(measured, key=lambda m: m[0] - COMMON_MODE_CONFIDENCE * m[1])
                evidence.common_mode_drop, evidence.common_mode_noise = drop, noise
            evidence.ring_collapse = self._ring_score(site, samples, evidence, equal_pair)
            evidence.precision_deviation = self._precision(x1, x2, dim, eps, result)

            step_seen = []
            for index, x in enumerate(tensors):
                if prints[index] is None or constant[index]:
                    continue
                step_seen.append(
                    _Seen(
                        step=step, arg=index, expr=exprs[index], storage=_storage_ref(x), shape=tuple(x.shape),
                        dtype=x.dtype, fingerprint=prints[index], had_grad=x.requires_grad,
                        storage_offset=x.storage_offset(), strides=tuple(x.stride()),
                    )
                )
            self._seen.append((site, step_seen))
        return evidence

    def _stale_match(self, index: int, x: torch.Tensor, print_: tuple[float, ...], site: str) -> StaleMatch | None:
        """Whether ``x`` is an argument of a previous batch, seen at an earlier step.

        Reuse within the current batch is not staleness: an anchor compared with a positive and
        then with a negative is the same tensor at two consecutive steps. Two signs tell that
        apart without knowing where batches begin:

        - ``x`` carries autograd history whose graph is still whole: it belongs to the graph
          being built now. (A tensor kept across ``backward()`` has its graph's saved tensors
          freed, and is reported: the next backward through it will fail.)
        - the earlier step is in the current pass of the loop: this call site has not been
          reached since that step (a loop comes back to the same call on its next batch).
        """
        if x.grad_fn is not None and not _graph_freed(x.grad_fn):
            return None
        storage = None
        try:
            storage = x.untyped_storage()
        except (RuntimeError, NotImplementedError):
            pass
        site_reached = False
        for seen_site, seen_step in reversed(self._seen):
            site_reached = site_reached or seen_site == site
            if not site_reached:
                continue
            for seen in seen_step:
                if seen.shape != tuple(x.shape) or seen.dtype != x.dtype or seen.fingerprint != print_:
                    continue
                earlier = seen.storage() if seen.storage is not None else None
                same_memory = (
                    earlier is not None
                    and storage is not None
                    and earlier is storage
                    and seen.storage_offset == x.storage_offset()
                    and seen.strides == tuple(x.stride())
                )
                if earlier is not None and not same_memory and earlier.device == x.device:
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
                    detached=seen.had_grad and not x.requires_grad,
                )
        return None

    @staticmethod
    def _rows(x: torch.Tensor, dim: int) -> torch.Tensor | None:
        if x.layout != torch.strided or x.device.type == "meta" or x.numel() == 0 or x.dim() == 0:
            return None
        if x.is_complex() or not (x.is_floating_point()):
            return None
        d = reduced_dim(dim, x.dim())
        if -d > x.dim():
            return None
        return _rows(x.detach(), d)

    def _ring_score(self, site: str, rows: list[torch.Tensor | None], evidence: Evidence, equal_pair: bool) -> float | None:
        ring = self._rings.setdefault(site, _SiteRing())
        stale_args = {m.arg for m in evidence.stale}
        for index, r in enumerate(rows):
            # Only vectors of new samples count: not a recycled partner, not a copy of the anchor.
            if r is None or index in stale_args or (index == 1 and equal_pair):
                continue
            for row in torch.nn.functional.normalize(r[: self.ring_rows].to(torch.float32), dim=-1):
                ring.rows.append(row.clone())
                if len(ring.rows) > self.ring_rows:
                    ring.rows.popleft()
        if len(ring.rows) < 4:
            return None
        dims = {row.shape[0] for row in ring.rows}
        if len(dims) != 1:
            ring.rows.clear()
            return None
        return collapse_score(torch.stack(list(ring.rows)))

    @staticmethod
    def _precision(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float, result: Any) -> float | None:
        if not isinstance(result, torch.Tensor) or result.numel() == 0 or result.layout != torch.strided:
            return None
        if not (x1.is_floating_point() and x2.is_floating_point()) or result.device.type == "meta":
            return None
        shape = torch.broadcast_shapes(x1.shape, x2.shape)
        if len(shape) == 0:
            return None
        d = reduced_dim(dim, len(shape))
        a = x1.detach().expand(shape).movedim(d, -1)
        b = x2.detach().expand(shape).movedim(d, -1)
        leading = a.shape[:-1]
        total = result.numel()
        if total != math.prod(leading):
            return None
        picks = torch.linspace(0, total - 1, min(total, SAMPLE_ROWS), device=result.device).long().unique()
        index = torch.unravel_index(picks, leading) if leading else ()
        rows_a = a[index] if leading else a.reshape(1, -1)
        rows_b = b[index] if leading else b.reshape(1, -1)
        exact = _original_cosine()(
            rows_a.to(torch.float64), rows_b.to(torch.float64), dim=-1, eps=eps
        )
        got = result.detach().reshape(-1)[picks].to(torch.float64)
        both_nan = torch.isnan(exact) & torch.isnan(got)
        deviation = torch.where(both_nan, torch.zeros_like(exact), (exact - got).abs())
        value = float(deviation.max())
        return value if value == value else math.inf
