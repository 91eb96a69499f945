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
from cossim_tui.diagnostics.judge import Evidence, StaleMatch

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


def _mean_offdiagonal_cosine(rows: torch.Tensor) -> float:
    # Σ_i Σ_j u_i·u_j = |Σ_i u_i|², and the diagonal adds n: no n×n Gram matrix needed.
    unit = torch.nn.functional.normalize(rows, dim=-1)
    n = rows.shape[0]
    total = unit.sum(dim=0).square().sum()
    return float((total - n) / (n * (n - 1)))


def common_mode_drop(rows: torch.Tensor) -> float | None:
    """How much the mean cosine between different rows falls once the batch mean is removed."""
    if rows.shape[0] < 4 or rows.shape[1] < 2:
        return None
    rows = rows[:SAMPLE_ROWS].to(torch.float64)
    before = _mean_offdiagonal_cosine(rows)
    after = _mean_offdiagonal_cosine(rows - rows.mean(dim=0, keepdim=True))
    # n centred rows sum to zero, so their mean pairwise cosine sits near -1/(n-1) even for
    # independent vectors; only the fall beyond that baseline is a shared offset.
    return before - (after + 1.0 / (rows.shape[0] - 1))


def _original_cosine() -> Any:
    # The public name may be our own wrapper; judging must not be intercepted.
    cosine = torch.nn.functional.cosine_similarity
    return getattr(cosine, "__cossim_tui_original__", cosine)


class EvidenceCollector:
    def __init__(self, keep_steps: int = 8, ring_rows: int = 256) -> None:
        self.keep_steps = keep_steps
        self.ring_rows = ring_rows
        self._seen: deque[list[_Seen]] = deque(maxlen=keep_steps)
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
    ) -> Evidence:
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
                if prints[index] is None or constant[index]:
                    continue
                match = self._stale_match(index, x, prints[index])
                if match is not None:
                    evidence.stale.append(match)

            rows = [self._rows(x, dim) for x in tensors]
            evidence.batch_collapse = [collapse_score(r[:COLLAPSE_ROWS]) if r is not None else None for r in rows]
            drops = [common_mode_drop(r) if r is not None else None for r in rows]
            evidence.common_mode_drop = max((d for d in drops if d is not None), default=None)
            evidence.ring_collapse = self._ring_score(site, rows, evidence, equal_pair)
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
            self._seen.append(step_seen)
        return evidence

    def _stale_match(self, index: int, x: torch.Tensor, print_: tuple[float, ...]) -> StaleMatch | None:
        storage = None
        try:
            storage = x.untyped_storage()
        except (RuntimeError, NotImplementedError):
            pass
        for seen_step in reversed(self._seen):
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
                if earlier is not None and not same_memory:
                    # The earlier tensor's memory still exists: confirm the values exactly.
                    view = torch.empty(0, dtype=seen.dtype, device=x.device).set_(
                        earlier, seen.storage_offset, seen.shape, seen.strides
                    )
                    if not torch.equal(view, x.detach()):
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
