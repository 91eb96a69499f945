"""The headless report of a run (CONTRACT ``cossim-tui/report/1``) and its text summary.

The report's entries are typed records, encoded by the protocol's codec for other tools:
strict JSON, where a non-finite number is ``null``. ``ReportBuilder`` is fed the same steps
the TUI gets and keeps what the report needs: the findings tally (``session.findings``), and
the first and last ``CALL_CAP`` calls (``steps`` still counts every call).
"""

from __future__ import annotations

import math
import textwrap
from collections import deque

from msgspec import Struct

from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.protocol import (
    Hello,
    ModuleCall,
    Relation,
    Spread,
    StepCaptured,
    TensorSummary,
    encode_for_tools,
    finite_or_none,
)
from cossim_tui.session.events import ScriptExited, Target
from cossim_tui.session.findings import FindingTally

SCHEMA = "cossim-tui/report/1"
_COUNTS = ("epoch", "batch", "optimizer_steps")
"""Context keys that are counts; the protocol carries every context value as a number."""
CALL_CAP = 500


class ReportArg(Struct, omit_defaults=True):
    """One argument of a call, as other tools read it."""

    expr: str
    shape: list[int]
    dtype: str
    device: str
    requires_grad: bool
    grad_fn: str | None
    norm_mean: float | None
    norm_min: float | None
    norm_max: float | None
    made_by: ModuleCall | None
    nan: int
    inf: int
    note: str | None = None
    """Why the argument could not be summarised; left out when it was."""


class CosSpread(Struct):
    min: float | None
    mean: float | None
    max: float | None


class ReportCall(Struct):
    step: int
    function: str
    site: str
    dim: int | None
    args: list[ReportArg]
    cos: CosSpread | None
    relation: Relation | None
    context: dict[str, int | float | None]
    codes: list[str]
    """The codes found at this step, muted ones left out."""
    error: str | None
    rank: int | None = None
    """The rank that made the call, in a distributed job; ``null`` for a single process."""
    via: str | None = None
    """The installed library's function that made the call (``MODULE:QUALNAME``), when the call
    was made inside a library; ``site`` is then the user's line that called into it."""
    kind: str = "pair"
    """``matrix`` for a similarity matrix of normalised rows, ``pair`` for a pairwise call."""
    positives: CosSpread | None = None
    """A matrix's positives (its diagonal, or the pairs its labels mark); ``null`` for a pair."""
    negatives: CosSpread | None = None
    """A matrix's other entries; ``null`` for a pair."""


class ReportFinding(Struct):
    code: str
    severity: str
    site: str
    first_step: int
    last_step: int
    count: int
    message: str
    fix: str
    """The suggested fix, as one paragraph of plain text."""
    ranks: list[int] = []
    """The ranks it was found on; empty for a single process."""


class Report(Struct):
    schema: str
    script: str
    argv: list[str]
    status: str
    exit_code: int | None
    signal: int | None
    exception: str | None
    steps: int
    findings: list[ReportFinding]
    muted: list[str]
    calls: list[ReportCall]
    world_size: int | None = None
    """How many ranks the job had; ``null`` for a single process."""


def _arg_entry(arg: TensorSummary) -> ReportArg:
    norm = arg.norm
    return ReportArg(
        expr=arg.expr,
        shape=arg.shape,
        dtype=arg.dtype,
        device=arg.device,
        requires_grad=arg.requires_grad,
        grad_fn=arg.grad_fn,
        norm_mean=norm.mean if norm else None,
        norm_min=norm.min if norm else None,
        norm_max=norm.max if norm else None,
        made_by=arg.made_by,
        nan=arg.nan,
        inf=arg.inf,
        note=arg.note or None,
    )


def _spread(spread: Spread | None) -> CosSpread | None:
    return CosSpread(finite_or_none(spread.min), finite_or_none(spread.mean), finite_or_none(spread.max)) if spread else None


def call_entry(step: StepCaptured) -> ReportCall:
    relation, cos, matrix = step.relation, step.cos, step.matrix
    return ReportCall(
        step=step.step,
        function=step.function,
        site=step.site.label,
        dim=relation.dim if relation else None,
        args=[_arg_entry(a) for a in step.args],
        cos=CosSpread(finite_or_none(cos.min), finite_or_none(cos.mean), finite_or_none(cos.max)) if cos else None,
        relation=relation,
        context={k: int(v) if k in _COUNTS and math.isfinite(v) else finite_or_none(v) for k, v in step.context.items()},
        codes=[f.code for f in step.findings if not f.muted],
        error=step.error,
        rank=step.rank,
        via=step.site.via,
        kind="matrix" if matrix is not None else "pair",
        positives=_spread(matrix.positives) if matrix is not None else None,
        negatives=_spread(matrix.negatives) if matrix is not None else None,
    )


class ReportBuilder:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.steps = 0
        self._first: list[ReportCall] = []
        self._last: deque[ReportCall] = deque(maxlen=CALL_CAP)
        self.tally = FindingTally()
        self.world_size: int | None = None
        self.ranks: set[int] = set()

    def hello(self, hello: Hello) -> None:
        """A process of the run said hello: in a job, which rank it is and how many there are."""
        if hello.rank is not None:
            self.ranks.add(hello.rank)
        if hello.world_size is not None:
            self.world_size = hello.world_size

    def add(self, step: StepCaptured) -> None:
        self.steps += 1
        entry = call_entry(step)
        if len(self._first) < CALL_CAP:
            self._first.append(entry)
        else:
            self._last.append(entry)
        self.tally.add((step,))

    def report(self, exited: ScriptExited) -> Report:
        status = exited.status if exited.status not in ("not-found", "quit") else ("error" if exited.status == "not-found" else "killed")
        return Report(
            schema=SCHEMA,
            script=self.target.script if self.target.script is not None else f"-m {self.target.module}",
            argv=self.target.argv,
            status=status,
            exit_code=exited.exit_code,
            signal=exited.signal,
            exception=exited.exception,
            steps=self.steps,
            findings=[
                ReportFinding(f.code, f.severity, f.site, f.first_step, f.last_step, f.count, f.message, CATALOG[f.code].fix, f.ranks)
                for f in self.tally.active()
            ],
            muted=self.tally.muted_codes(),
            calls=self._first + list(self._last),
            world_size=self.world_size,
        )

    def summary(self, exited: ScriptExited) -> str:
        lines = [f"cossim-tui check: {self.target.name}"]
        over = f" on {len(self.ranks)} of {self.world_size} ranks" if self.world_size is not None else ""
        lines.append(f"  {exited.description} · {self.steps} cosine call{'s' if self.steps != 1 else ''} intercepted{over}")
        found = self.tally.active()
        if not found:
            lines.append("  no findings")
        for f in found:
            steps = f"step {f.first_step}" if f.count == 1 else f"steps {f.first_step}–{f.last_step} ({f.count}×)"
            ranks = f" · rank{'s' if len(f.ranks) > 1 else ''} {', '.join(map(str, f.ranks))}" if f.ranks else ""
            lines.append(f"  {f.severity:<7} {f.code:<20} {f.site}  {steps}{ranks}")
            lines.append(f"          {f.message}")
            lines.extend(textwrap.wrap(f"fix: {CATALOG[f.code].fix}", 96, initial_indent=" " * 10, subsequent_indent=" " * 15))
        muted = self.tally.muted_codes()
        if muted:
            lines.append(f"  muted: {', '.join(muted)}")
        return "\n".join(lines)


def write_report(path: str, report: Report) -> None:
    data = encode_for_tools(report) + b"\n"  # (before the file is opened: a failure leaves no empty report)
    with open(path, "wb") as handle:
        handle.write(data)
