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
from typing import Any

import torch

from cossim_tui.agent.capture import PendingPair, queue_pair
from cossim_tui.agent.evidence_queue import ArgPlan, QueuedEvidence
from cossim_tui.agent.partners import (
    MOMENTS_TOLERANCE,
    NAN_SENTINEL,
    Fingerprint,
    PartnerHistory,
    SeenArgument,
    graph_live_now,
    storage_ref,
)
from cossim_tui.agent.precision import deviation, queue_precision
from cossim_tui.agent.spread import (
    COLLAPSE_ROWS,
    SiteRings,
    batch_figures,
    centred_statistics,
    collapse_score,
    common_mode,
    common_mode_drop,
    sample_vectors,
)
from cossim_tui.agent.summaries import sample_key
from cossim_tui.agent.tensors import as_rows
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.diagnostics.judge import COMMON_MODE_CONFIDENCE, Evidence

_BATCH_UNITS = object()
"""Where an argument's ring rows are the unit rows its batch figures were made of."""

__all__ = ["EvidenceCollector", "PendingEvidence", "collapse_score", "common_mode", "common_mode_drop", "graph_live_now", "sample_vectors"]

def _centred_figures(plan: ArgPlan) -> list[float]:
    """``centred_statistics`` of one argument, read back at once (on the CPU that costs nothing)."""
    values, position = plan.batch  # type: ignore[misc]
    return torch.cat(centred_statistics(values[position : position + 1]), dim=2).view(-1).tolist()


class PendingEvidence(QueuedEvidence):
    """One call's evidence, queued on a transfer; ``finish()`` once it has been fetched."""

    # -- after the fetch ----------------------------------------------------------------

    def finish(self, equal_pair: bool) -> Evidence:
        evidence = Evidence(eps=self.eps)
        if not self.active:
            return evidence
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._finish(evidence, equal_pair)
        return self._finish(evidence, equal_pair)

    def _fingerprint(self, index: int) -> Fingerprint | None:
        plan = self.plans[index]
        if plan.sample_at is None and plan.sample_key is None:
            return None
        stats = self.transfer[plan.stats_slot] if plan.stats_slot is not None else self.pair.first_pass(index)
        assert stats is not None
        mean, std, low, high = stats[:4]
        sample = plan.sample_key
        if sample is None:
            slot, offset, count = plan.sample_at  # type: ignore[misc]
            sample = sample_key(self.transfer[slot][offset : offset + count])
        # NaN never equals NaN; a sentinel keeps fingerprints with NaN comparable (the sample's
        # bytes compare bit for bit already).
        key = (low if low == low else NAN_SENTINEL, high if high == high else NAN_SENTINEL, sample)
        return Fingerprint.of(key, mean, std, MOMENTS_TOLERANCE.get(plan.reduced_in, MOMENTS_TOLERANCE[torch.float32]))

    def _finish(self, evidence: Evidence, equal_pair: bool) -> Evidence:
        collector, transfer = self.collector, self.transfer
        prints = [self._fingerprint(i) for i in range(2)]
        constant = [print_ is not None and print_.constant for print_ in prints]
        self.usable = [self._usable(0), self._usable(1)]
        for index, x in enumerate(self.tensors):
            if prints[index] is None or constant[index] or self.fresh[index]:
                continue
            live = self.graph_live[index] if self.graph_live is not None else None
            match = collector.partners.match(index, x, prints[index], self.site, live, self._copy(index), self._requires_grad(index))
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
                figures = batch_figures(
                    transfer[slot][offset : offset + count], min(rows, COLLAPSE_ROWS), width, functools.partial(self._centred, index)
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
                rows = sample_vectors(as_rows(self.values[index].detach(), self.d)[:COLLAPSE_ROWS])
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

        ring = collector.rings.at(self.site)
        stale_args = {m.arg for m in evidence.stale}
        # Only vectors of new samples count: not a recycled partner, not a copy of the anchor.
        new = [
            index for index, rows in enumerate(samples) if rows is not None and index not in stale_args and not (index == 1 and equal_pair)
        ]
        both = self.stacked_unit
        if both is None and self.few_unit is not None and all(samples[i] is self.plans[i].unit for i in range(2)):
            both = self.few_unit  # (no row of either was left out of its samples)
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
        described = self.pair.described
        for index, x in enumerate(self.tensors):
            if prints[index] is None or constant[index]:
                continue
            seen = described[index] if described is not None else None
            if seen is not None and seen.storage is not None:  # read at the call (fingerprintable: strided)
                shape, offset, strides = seen.shape, seen.storage[1], seen.storage[2]
            else:
                shape, offset, strides = tuple(x.shape), x.storage_offset(), tuple(x.stride())
            step_seen.append(
                SeenArgument(
                    self.step, index, self.exprs[index], storage_ref(x), shape, x.dtype, prints[index],
                    self._requires_grad(index), offset, strides, self._copy(index),
                )
            )
        collector.partners.remember(self.site, step_seen)
        return evidence

    def _centred(self, index: int) -> list[float]:
        """``centred_statistics`` of one argument: made with a batch of calls' where it was
        (``batch.Share.centred``), else now."""
        share, plan = self.pair.share, self.plans[index]
        if share is not None and plan.batch is not None and plan.batch[0] is share.values:
            made = share.centred[plan.batch[1]]
            if made is not None:
                return made
        return _centred_figures(plan)

    def _requires_grad(self, index: int) -> bool:
        """Whether an argument required grad at the call (read then where capture described it:
        a step summarised later gets views of the tensors without autograd)."""
        described = self.pair.described
        return described[index].requires_grad if described is not None else self.tensors[index].requires_grad

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

    def _few_unit_rows(self, plan: ArgPlan) -> torch.Tensor | None:
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
        if self.exact_slot is not None or self.exact_deviation is not None:
            usable = self.usable[0] and self.usable[1]
            if usable and all(self.pair.first_pass(i)[4] >= self.eps for i in range(2)):  # type: ignore[index]
                if self.exact_deviation is not None:
                    return self.exact_deviation
                got = self.pair.similarity_values()
                assert got is not None
                return deviation(self.transfer[self.exact_slot], got)
            # Norms below eps (torch clamps them) or non-finite values: recompute as torch does.
            extra = HostTransfer()
            slot = queue_precision(*self.values, self.dim, self.eps, self.result_values, extra)  # type: ignore[arg-type]
            if slot is None:
                return None
            extra.fetch()
            return extra[slot][0]
        if self.precision_slot is None:
            return None
        return self.transfer[self.precision_slot][0]


class EvidenceCollector:
    """The evidence stages of the agent, each owning its own state: the recent arguments
    (``partners``) and each call site's ring of unit rows (``rings``)."""

    def __init__(self, keep_steps: int = 8, ring_rows: int = 256) -> None:
        self.partners = PartnerHistory(keep_steps)
        self.rings = SiteRings(ring_rows)

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

