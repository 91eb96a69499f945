"""One call's evidence, queued: every figure the evidence needs, on the call's one transfer.

Before the fetch, ``QueuedEvidence`` plans each argument (``ArgPlan``) and queues its
fingerprint's sample, its batch figures (both arguments stacked where they can be), the rows a
site's ring needs and the float64 recomputation; ``evidence.PendingEvidence`` reads them back
once the transfer has been fetched and makes the judges' ``Evidence`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.capture import PendingPair
from cossim_tui.agent.partners import fingerprintable
from cossim_tui.agent.precision import queue_precision
from cossim_tui.agent.spread import (
    COLLAPSE_ROWS,
    RING_ON_HOST,
    batch_statistics,
    centred_statistics,
)
from cossim_tui.agent.summaries import SAMPLE, SMALL, ArgValues, working_dtype
from cossim_tui.agent.tensors import reduced_dim
from cossim_tui.agent.transfer import HostTransfer

FINGERPRINT_SAMPLE = SAMPLE
"""Values a fingerprint holds besides the statistics (capture fetches them with the preview)."""


@dataclass(slots=True)
class ArgPlan:
    """What was queued for one argument."""

    x: torch.Tensor
    values: ArgValues | None
    """Capture's rows, when the batch figures can use them (a float tensor, the dim its own)."""
    sample_at: tuple[int, int, int] | None = None
    """(slot, offset, count) of the fingerprint's sample of values (``None``: see ``sample_key``)."""
    sample_key: bytes | None = None
    """That sample already as the fingerprint holds it, where a batch of calls made it; with
    neither, the argument has no fingerprint."""
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


def on_device(values: torch.Tensor) -> bool:
    """Whether reading ``values`` back would wait for a device. Then everything is queued on the
    one transfer, even figures that matter only sometimes (the centred ones), and the ring of a
    site with few rows lives on the host; on the CPU a figure is made only where it matters."""
    return not values.is_cpu


class QueuedEvidence:
    """One call's evidence, queued on a transfer (``evidence.PendingEvidence`` finishes it)."""

    def __init__(
        self,
        collector: Any,
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
            plans.append(ArgPlan(x, values if usable else None))
        self.plans = plans
        self.stacked_unit: torch.Tensor | None = None
        """Both arguments' unit rows as one (2, n, d), when the batch figures were made together."""
        self.few_unit: torch.Tensor | None = None
        """Both arguments' unit rows as one (2, n, d), when they have fewer than 4 rows each and
        were made together on the CPU: the site's ring takes them in one push."""
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
            plan.sample_key = plan.values.sample_key  # type: ignore[union-attr]
            plan.reduced_in = plan.values.dtype  # type: ignore[union-attr]

    def _queue_figures(self, group: list[ArgPlan], values: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """The batch figures of a group of arguments stacked as (k, n, d) in one queued vector;
        returns their unit rows."""
        if values.shape[1] > COLLAPSE_ROWS:
            values, norms = values[:, :COLLAPSE_ROWS], norms[:, :COLLAPSE_ROWS]
        share = self.pair.share
        if share is not None and len(group) == 2 and values is share.values and not on_device(values):
            # Made with a batch of calls' (``batch``): the same two figures per argument.
            unit, slot, count = share.unit, self.transfer.given(share.figures), 2
        else:
            figures, unit = batch_statistics(values, norms)
            if on_device(values):
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
                    plan.sample_at, plan.sample_key, plan.reduced_in = values.sample_at, values.sample_key, values.dtype
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
        if len(few) == 2 and self.pair.stacked is not None and not on_device(self.pair.stacked[0]):
            values, norms = self.pair.stacked
            unit = self.few_unit = values / norms
            for index, plan in enumerate(few):
                plan.unit = unit[index]
        for plan in few:
            values = plan.values
            if plan.unit is None and not on_device(values.values):
                plan.unit = values.values / values.norms
            plan.host_rows_slot = transfer.vector(values.values)

    def _queue_precision(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        transfer, plans = self.transfer, self.plans
        self.precision_slot = None
        self.exact_slot = None
        self.exact_deviation: float | None = None
        """``precision.deviation`` of the float64 recomputation, where a batch of calls made it."""
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
            share = self.pair.share
            if share is not None and self.stacked_unit is share.unit and share.unit.shape[1] == rows:
                self.exact_deviation = share.deviation  # made with a batch of calls'
                return
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
