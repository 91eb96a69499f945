"""The agent's pipeline for one call: capture → evidence → judges → pictures → the step.

``Pipeline`` owns the stages and their state (the recent arguments and per-site rings of
``evidence``, the embedding maps, the pictures, the judge) and turns a ``Call`` into its
``StepCaptured``: ``begin`` reads what the tensors say now and queues every figure each stage
needs on the call's one transfer; after the fetch, ``summarise`` finishes them, judges and
pictures the step. ``Controller`` decides when to run it and whether to stop; ``explain()``
runs the same pipeline on one pair in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cossim_tui import protocol
from cossim_tui.agent.call import Call
from cossim_tui.agent.pictures import Pictures
from cossim_tui.diagnostics.judge import Judge
from cossim_tui.protocol import CallSite, Finding, StepCaptured, TensorSummary


class _Tools:
    """The modules a capture uses, imported once: they import torch, which only the script may
    import first, so not at the top of this module."""

    def __init__(self) -> None:
        import torch

        from cossim_tui.agent.batch import HostCopy, parkable, share_batch
        from cossim_tui.agent.capture import (
            copy_small_pair,
            describe_pair,
            queue_pair,
            small_pair_on_device,
        )
        from cossim_tui.agent.evidence import EvidenceCollector, graph_live_now
        from cossim_tui.agent.projection import ProjectionMaps
        from cossim_tui.agent.provenance import PendingIdenticalInputs
        from cossim_tui.agent.strips import queue_value_strips
        from cossim_tui.agent.transfer import HostTransfer, runs_behind

        self.no_grad = torch.no_grad
        self.queue_pair, self.EvidenceCollector, self.ProjectionMaps = queue_pair, EvidenceCollector, ProjectionMaps
        self.PendingIdenticalInputs, self.queue_value_strips, self.HostTransfer = PendingIdenticalInputs, queue_value_strips, HostTransfer
        self.small_pair_on_device, self.copy_small_pair = small_pair_on_device, copy_small_pair
        self.describe_pair, self.graph_live_now, self.runs_behind = describe_pair, graph_live_now, runs_behind
        self.HostCopy, self.parkable, self.share_batch = HostCopy, parkable, share_batch


def made_of(call: Call) -> tuple[Any, Any]:
    """The tensors whose maker a call's sides are: the arguments, or for a matrix the tensors
    its rows were normalised from (where they are still alive)."""
    if call.made_from is None:
        return call.x1, call.x2
    return tuple(source if source is not None else x for source, x in zip(call.made_from, (call.x1, call.x2)))  # type: ignore[return-value]


def queue_matrix_of(call: Call, transfer: Any) -> Any:
    """A matrix step's figures, queued (``agent.matrix``), with its rows' labels where known."""
    from cossim_tui.agent.matrix import queue_matrix

    labels = tuple(m.labels if m is not None else None for m in call.made)
    return queue_matrix(call.x1, call.x2, call.result, labels, transfer)  # type: ignore[arg-type]


class Pipeline:
    def __init__(
        self,
        judge: Judge,
        muted: set[tuple[str, str]],
        config: Callable[[], protocol.AgentConfig],
        stops_at: Callable[[list[Finding]], bool],
    ) -> None:
        self.judge = judge
        self.muted = muted
        """(code, site) pairs the user muted (``*`` for every site), shared with the controller."""
        self.config = config
        self.stops_at = stops_at
        """Whether the script will stop at a step with these findings (a map is made for it)."""
        self.pictures = Pictures()
        # These need torch, which only the script may import first: made when it does.
        self.evidence: Any = None
        self.projections: Any = None
        self.provenance: Any = None
        self.context: Any = None
        self.gathers: Any = None
        self._tools: Any = None
        """The capture's modules, imported at the first call (torch is the script's to import)."""
        self._unmapped: dict[str, tuple[Any, ...]] = {}
        """Per site, its last call that fed no map's rows (a free run between two pictured steps),
        as detached views: its rows are the run's end if no pictured step follows (``final_maps``)."""

    def capture(self, call: Call) -> StepCaptured:
        """The step of ``call``, made now: its figures queued, fetched at once, summarised."""
        tools = self.ready()
        # One no_grad for the whole capture (the modules skip theirs when grad is off already).
        with tools.no_grad():
            self.begin(call)
            # Everything read from the tensors was queued on one transfer, fetched once: on a GPU
            # that is the call's only wait for the device.
            call.transfer.fetch()
            return self.summarise(call, may_stop=True)

    def ready(self) -> Any:
        tools = self._tools
        if tools is None:
            tools = self._tools = _Tools()
        if self.evidence is None:
            self.evidence = tools.EvidenceCollector()
        if self.projections is None:
            self.projections = tools.ProjectionMaps()
        return tools

    def begin(self, call: Call, *, park: bool = False) -> Call:
        """Read what the call's tensors say now and queue their values on the call's transfer;
        ``park``: copy a small pair on the CPU now, to be summarised later (``batch``)."""
        tools = self._tools
        transfer = call.transfer = tools.HostTransfer()
        x1, x2, result, step, pictures = call.x1, call.x2, call.result, call.step, call.pictures
        # Tuples, not lists: a parked call keeps them until it is summarised (``batch``), and
        # a tuple of plain values is untracked by the garbage collector once it has seen it.
        first, second = made_of(call)
        provenance, context = self.provenance, self.context
        made = call.made = (provenance.made_by(first), provenance.made_by(second)) if provenance is not None else (None, None)
        call.fresh = (made[0] is not None and made[0].call.step == step, made[1] is not None and made[1].call.step == step)
        call.from_loader = (context.from_loader(x1), context.from_loader(x2)) if context is not None else (False, False)
        if self.gathers is not None:
            call.gathered = self.gathers.of(x1, x2)
        call.inputs = tools.PendingIdenticalInputs.of(made[0], made[1], transfer)
        call.context = self.context.queue_snapshot(transfer) if self.context is not None else dict
        call.images = self.pictures.queue_images(made, transfer) if pictures else None
        if park:
            call.host = tools.HostCopy(x1, x2, result)
        elif tools.small_pair_on_device(x1, x2, result):
            # It travels whole in the transfer, and is summarised on the host afterwards.
            call.host = tools.copy_small_pair(x1, x2, result, transfer)
        else:
            self.queue_summaries(call, transfer, None)
        if call.matrix:
            call.figures = queue_matrix_of(call, transfer)
        return call

    def queue_summaries(self, call: Call, transfer: Any, copies: Any) -> None:
        """Queue the pair's summaries, evidence and value strips on ``transfer``: from the tensors,
        or from ``copies`` of their values made on the host."""
        tools = self._tools
        x1, x2 = call.x1, call.x2
        call.pair = tools.queue_pair(x1, x2, call.dim, call.result, call.exprs, transfer, copies, call.described, call.share)
        call.evidence = self.evidence.queue(
            call.step, call.where, call.exprs, x1, x2, call.dim, call.eps, call.result, call.pair, transfer,
            call.fresh, call.graph_live,
        )
        call.values = (x1, x2) if copies is None else copies[:2]
        call.strips = tools.queue_value_strips(*call.values, call.dim, transfer) if call.pictures else None

    def summarise(self, call: Call, *, may_stop: bool) -> StepCaptured:
        """The step of a call whose transfer has been fetched: summaries, evidence, findings."""
        tools = self._tools
        if call.host is not None:
            # The small pair's values are on the host now: summarised there (a second transfer,
            # between host tensors, that waits for nothing).
            on_host = tools.HostTransfer()
            self.queue_summaries(call, on_host, call.host())
            on_host.fetch()
        step, label = call.step, call.where
        pair = call.pair.finish()
        for summary, made_one, from_loader in zip(pair.args, call.made, call.from_loader):
            summary.made_by = made_one.call if made_one is not None else None
            summary.from_loader = from_loader
        equal_pair = pair.relation is not None and bool(pair.relation.equal_values or pair.relation.shares_storage)
        evidence = call.evidence.finish(equal_pair)
        evidence.identical_inputs = call.inputs.finish(call.transfer)
        evidence.gathered = call.gathered
        error = call.error
        error_text = f"{type(error).__name__}: {error}" if error is not None else None
        matrix = call.figures.finish() if call.figures is not None else None
        if matrix is not None and call.figures.deviation is not None:
            # The pair's recomputation is row by row: a matrix's is its own.
            evidence.precision_deviation = call.figures.deviation
        findings = self.judge.judge(step, label, pair.args, pair.relation, pair.cos, evidence, error_text)
        if matrix is not None:
            findings = self.judge.judge_matrix(step, label, pair.args, matrix, findings)
        if self.muted:
            for finding in findings:
                finding.muted = finding.muted or (finding.code, finding.site) in self.muted or (finding.code, "*") in self.muted
        if call.images is not None and call.strips is not None:
            self.pictures.put(pair.args, call.images, call.strips)
        # The map is due every few steps, and always where the script will stop (someone is looking).
        # Its rows are fed on the steps that get pictures, so a map shows the run's recent vectors.
        projection = None
        stops = may_stop and self.stops_at(findings)
        labels = [m.labels if m is not None else None for m in call.made]
        self._unmapped.pop(label, None)
        if call.pictures or stops:
            projection = self.projections.observe(step, label, *call.values, call.dim, force=stops, labels=labels)
        elif self.config().pictures != "none" and len(self._unmapped) < 64:
            self._unmapped[label] = (step, *(getattr(v, "detach", lambda v=v: v)() for v in call.values), call.dim, labels)
        return StepCaptured(
            step=step,
            function=call.function,
            site=call.site,
            args=pair.args,
            relation=pair.relation,
            cos=pair.cos,
            error=error_text,
            findings=findings,
            context=call.context(),
            paused=False,
            wall_time=call.wall_time,
            projection=projection,
            matrix=matrix,
        )

    def picture_stop(self, message: StepCaptured, x1: Any, x2: Any, dim: Any, *, with_map: bool) -> None:
        """The value strips and input images of a step that stops although it was not due any: a
        finding or the break condition decided it after the capture; and, ``with_map``, its
        map (the capture made the map of a step a finding stops at). They take a device→host
        transfer of their own, on a step where the script is about to wait for the user."""
        try:
            tools = self._tools
            dim_value = dim if isinstance(dim, int) else -1
            made = [self.provenance.made_by(x) if self.provenance is not None else None for x in (x1, x2)]
            with tools.no_grad():
                transfer = tools.HostTransfer()
                images = self.pictures.queue_images(made, transfer)
                strips = tools.queue_value_strips(x1, x2, dim_value, transfer)
                transfer.fetch()
                self.pictures.put(message.args, images, strips)
            if with_map and self.projections is not None:
                labels = [m.labels if m is not None else None for m in made]
                message.projection = self.projections.observe(
                    message.step, message.site.label, x1, x2, dim_value, force=True, labels=labels
                )
        except Exception:  # noqa: BLE001 - pictures are never worth breaking the script
            return

    def map_now(self, message: StepCaptured) -> None:
        """The map of a step the break condition stopped at although its pictures (and rows) were
        made at its capture, when no map was due then: a pause always shows its map."""
        if self.projections is not None and message.projection is None:
            message.projection = self.projections.map_now(message.step, message.site.label)

    def final_maps(self) -> list[protocol.Projection]:
        """The maps of the sites that ran on after their last map: the map on screen at the end
        is then the run's end (``ProjectionMaps.latest_maps``)."""
        if self.projections is None or self.config().pictures == "none":
            return []
        try:
            # A site's last call after its last pictured step is the run's end: its rows first.
            ends = [
                self.projections.observe(step, site, x1, x2, dim, force=True, labels=labels)
                for site, (step, x1, x2, dim, labels) in self._unmapped.items()
            ]
            self._unmapped.clear()
            return [m for m in ends if m is not None] + self.projections.latest_maps()
        except Exception:  # noqa: BLE001 - pictures are never worth breaking the script's end
            return []

    @staticmethod
    def failed_step(step: int, function: str, site: CallSite, names: tuple[str, str], exc: Exception) -> StepCaptured:
        import traceback  # only here: a capture that fails is rare, and the script starts sooner without it

        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        args = [
            TensorSummary(
                expr=name, shape=[], dtype="?", device="?", layout="?", numel=0, requires_grad=False,
                grad_fn=None, is_leaf=True, norm=None, rows=0, stats=None, nan=0, inf=0, preview=[],
                storage=None, note=f"cossim-tui could not summarise this call: {detail}",
            )
            for name in names
        ]
        return StepCaptured(
            step=step, function=function, site=site, args=args, relation=None, cos=None, error=None,
            findings=[], context={}, paused=False, wall_time=time.time(),
        )
