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
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.capture import PendingPair, queue_pair
from cossim_tui.agent.partners import (
    MOMENTS_TOLERANCE,
    NAN_SENTINEL,
    Fingerprint,
    PartnerHistory,
    SeenArgument,
    fingerprintable,
    graph_live_now,
    storage_ref,
)
from cossim_tui.agent.precision import deviation, queue_precision
from cossim_tui.agent.spread import (
    COLLAPSE_ROWS,
    RING_ON_HOST,
    SiteRings,
    batch_figures,
    batch_statistics,
    centred_statistics,
    collapse_score,
    common_mode,
    common_mode_drop,
    sample_vectors,
)
from cossim_tui.agent.summaries import SAMPLE, SMALL, ArgValues, working_dtype
from cossim_tui.agent.tensors import as_rows, reduced_dim
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.diagnostics.judge import COMMON_MODE_CONFIDENCE, Evidence

__all__ = ["EvidenceCollector", "PendingEvidence", "collapse_score", "common_mode", "common_mode_drop", "graph_live_now", "sample_vectors"]

FINGERPRINT_SAMPLE = SAMPLE
"""Values a fingerprint holds besides the statistics (capture fetches them with the preview)."""
_BATCH_UNITS = object()


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
    """(slot, offset, count) of the batch figures (``batch_statistics``, then
    ``centred_statistics`` where they were queued too)."""
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
    """``centred_statistics`` of one argument, read back at once (on the CPU that costs nothing)."""
    values, position = plan.batch  # type: ignore[misc]
    return torch.cat(centred_statistics(values[position : position + 1]), dim=2).view(-1).tolist()


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
            and fingerprintable(x1)
            and fingerprintable(x2)
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
        figures, unit = batch_statistics(values, norms)
        if _on_device(values):
            figures += centred_statistics(values)
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
            if values is not None and fingerprintable(x):
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
            self.precision_slot = queue_precision(*self.values, self.dim, self.eps, self.result_values, transfer)

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
        if plan.sample_at is None:
            return None
        stats = self.transfer[plan.stats_slot] if plan.stats_slot is not None else self.pair.first_pass(index)
        assert stats is not None
        mean, std, low, high = stats[:4]
        slot, offset, count = plan.sample_at
        key = [low, high, *self.transfer[slot][offset : offset + count]]
        if mean != mean or std != std:  # a NaN or an infinity somewhere: maybe among the key's values
            # NaN never equals NaN; a sentinel keeps fingerprints with NaN comparable.
            key = [v if v == v else NAN_SENTINEL for v in key]
        return Fingerprint(tuple(key), mean, std, MOMENTS_TOLERANCE.get(plan.reduced_in, MOMENTS_TOLERANCE[torch.float32]))

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
                SeenArgument(
                    self.step, index, self.exprs[index], storage_ref(x), tuple(x.shape), x.dtype, prints[index],
                    self._requires_grad(index), x.storage_offset(), tuple(x.stride()), self._copy(index),
                )
            )
        collector.partners.remember(self.site, step_seen)
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
                return deviation(self.transfer[self.exact_slot], got)
            # Norms below eps (torch clamps them) or non-finite values: recompute as torch does.
            extra = HostTransfer()
            slot = queue_precision(*self.values, self.dim, self.eps, self.result_values, extra)  # type: ignore[arg-type]
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

