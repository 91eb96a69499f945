"""Judgement across the ranks of a job: what no single rank can see by itself.

Each rank's agent judges its own calls. Whether two ranks trained on the same batch shows
only side by side: at the same step and call site, an argument of one rank whose summary
(shape, value statistics, norms and first values) equals the same argument's on another rank.
Summaries are what the screen gets of every step, so this needs nothing more from the ranks.
Equal summaries of vectors that differ would need equal mean, spread, extremes, norms and
first values together; vectors that are constant along the batch are left out (a zero
embedding is equal everywhere, and says nothing about the data).
"""

from __future__ import annotations

from collections import OrderedDict

from cossim_tui.protocol import RANKED, Finding, Message, StepCaptured, TensorSummary

KEPT_STEPS = 256
"""(site, step) pairs remembered, waiting for the other ranks' same step."""


def _signature(arg: TensorSummary) -> tuple | None:
    stats, norm = arg.stats, arg.norm
    if stats is None or norm is None or arg.numel < 2 or arg.nan or arg.inf or not stats.std > 0:
        return None
    return (tuple(arg.shape), arg.dtype, stats.min, stats.max, stats.mean, stats.std, norm.min, norm.mean, norm.max, tuple(arg.preview))


def equal_arguments(a: StepCaptured, b: StepCaptured) -> list[int]:
    """The arguments of two ranks' steps whose summaries are equal (the vectors, as far as a
    summary can tell), by position."""
    return [
        index
        for index, (x, y) in enumerate(zip(a.args, b.args))
        if (signature := _signature(x)) is not None and signature == _signature(y)
    ]


class CrossRankJudge:
    """``observe`` each step of a job as it arrives; returns the findings across ranks it adds."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, int], dict[int, list[tuple | None]]] = OrderedDict()

    def arrived(self, message: Message, rank: int | None) -> None:
        """A message from ``rank`` (as its channel's hello said): it carries its rank, and a
        step gets the findings it makes with the other ranks' steps."""
        if isinstance(message, RANKED):
            message.rank = rank  # type: ignore[union-attr]
        if isinstance(message, StepCaptured):
            message.findings.extend(self.observe(message))

    def observe(self, step: StepCaptured) -> list[Finding]:
        if step.rank is None:
            return []
        key = (step.site.label, step.step)
        ranks = self._seen.get(key)
        if ranks is None:
            ranks = self._seen[key] = {}
            while len(self._seen) > KEPT_STEPS:
                self._seen.popitem(last=False)
        mine = [_signature(arg) for arg in step.args]
        ranks[step.rank] = mine
        for other, theirs in sorted(ranks.items()):  # (``equal_arguments``, on kept signatures)
            if other == step.rank:
                continue
            for index, (a, b) in enumerate(zip(mine, theirs)):
                if a is not None and a == b:
                    expr = step.args[index].expr
                    return [
                        Finding(
                            code="same-batch-across-ranks",
                            severity="error",
                            message=(
                                f"{expr} on rank {step.rank} equals {expr} on rank {other} at step {step.step}: "
                                "the ranks train on the same batch"
                            ),
                            site=step.site.label,
                            step=step.step,
                            evidence=[f"args.{index}"],
                            ranks=sorted({other, step.rank}),
                        )
                    ]
        return []
