"""The headless report of a run (CONTRACT ``cossim-tui/report/1``) and its text summary.

``ReportBuilder`` is fed the same events the TUI gets and keeps what the report needs:
findings aggregated per (code, site), and the first and last ``CALL_CAP`` calls (``steps``
still counts every call). Non-finite numbers become ``null``, since other tools read this
JSON with strict parsers.
"""

from __future__ import annotations

import json
import textwrap
from collections import deque
from dataclasses import dataclass
from typing import Any

from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.launcher import ScriptExited, Target
from cossim_tui.protocol import SEVERITY_RANK, Finding, StepCaptured, TensorSummary, finite_or_none, to_jsonable

SCHEMA = "cossim-tui/report/1"
_COUNTS = ("epoch", "batch", "optimizer_steps")
"""Context keys that are counts; the protocol carries every context value as a number."""
CALL_CAP = 500


@dataclass
class FindingSummary:
    code: str
    severity: str
    site: str
    first_step: int
    last_step: int
    count: int
    message: str
    muted: bool


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _arg_entry(arg: TensorSummary) -> dict[str, Any]:
    entry = {
        "expr": arg.expr,
        "shape": arg.shape,
        "dtype": arg.dtype,
        "device": arg.device,
        "requires_grad": arg.requires_grad,
        "grad_fn": arg.grad_fn,
        "norm_mean": arg.norm.mean if arg.norm else None,
        "norm_min": arg.norm.min if arg.norm else None,
        "norm_max": arg.norm.max if arg.norm else None,
        "made_by": to_jsonable(arg.made_by) if arg.made_by else None,
        "nan": arg.nan,
        "inf": arg.inf,
    }
    if arg.note:
        entry["note"] = arg.note
    return entry


def call_entry(step: StepCaptured) -> dict[str, Any]:
    relation = step.relation
    return {
        "step": step.step,
        "function": step.function,
        "site": step.site.label,
        "dim": relation.dim if relation else None,
        "args": [_arg_entry(a) for a in step.args],
        "cos": {"min": step.cos.min, "mean": step.cos.mean, "max": step.cos.max} if step.cos else None,
        "relation": to_jsonable(relation) if relation else None,
        "context": {k: int(v) if k in _COUNTS else v for k, v in step.context.items()},
        "codes": [f.code for f in step.findings if not f.muted],
        "error": step.error,
    }


class ReportBuilder:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.steps = 0
        self._first: list[dict[str, Any]] = []
        self._last: deque[dict[str, Any]] = deque(maxlen=CALL_CAP)
        self.findings: dict[tuple[str, str], FindingSummary] = {}

    def add(self, step: StepCaptured) -> None:
        self.steps += 1
        entry = call_entry(step)
        if len(self._first) < CALL_CAP:
            self._first.append(entry)
        else:
            self._last.append(entry)
        for finding in step.findings:
            self._count(finding)

    def _count(self, finding: Finding) -> None:
        key = (finding.code, finding.site)
        summary = self.findings.get(key)
        if summary is None:
            self.findings[key] = FindingSummary(
                finding.code, finding.severity, finding.site, finding.step, finding.step, 1, finding.message, finding.muted
            )
        else:
            summary.last_step = finding.step
            summary.count += 1
            if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[summary.severity]:  # a later step measured worse (precision-loss)
                summary.severity, summary.message = finding.severity, finding.message

    def active_findings(self) -> list[FindingSummary]:
        """Findings that count: not muted, most severe first, then in order of appearance."""
        found = [f for f in self.findings.values() if not f.muted]
        return sorted(found, key=lambda f: (-SEVERITY_RANK[f.severity], f.first_step))

    def report(self, exited: ScriptExited) -> dict[str, Any]:
        status = exited.status if exited.status != "not-found" else "error"
        return _clean(
            {
                "schema": SCHEMA,
                "script": self.target.script if self.target.script is not None else f"-m {self.target.module}",
                "argv": self.target.argv,
                "status": status,
                "exit_code": exited.exit_code,
                "signal": exited.signal,
                "exception": exited.exception,
                "steps": self.steps,
                "findings": [
                    {
                        "code": f.code,
                        "severity": f.severity,
                        "site": f.site,
                        "first_step": f.first_step,
                        "last_step": f.last_step,
                        "count": f.count,
                        "message": f.message,
                    }
                    for f in self.active_findings()
                ],
                "muted": sorted({f.code for f in self.findings.values() if f.muted}),
                "calls": self._first + list(self._last),
            }
        )

    def summary(self, exited: ScriptExited) -> str:
        lines = [f"cossim-tui check: {self.target.name}"]
        lines.append(f"  {exited.description} · {self.steps} cosine call{'s' if self.steps != 1 else ''} intercepted")
        found = self.active_findings()
        if not found:
            lines.append("  no findings")
        for f in found:
            steps = f"step {f.first_step}" if f.count == 1 else f"steps {f.first_step}–{f.last_step} ({f.count}×)"
            lines.append(f"  {f.severity:<7} {f.code:<20} {f.site}  {steps}")
            lines.append(f"          {f.message}")
            lines.extend(textwrap.wrap(f"fix: {CATALOG[f.code].fix}", 96, initial_indent=" " * 10, subsequent_indent=" " * 15))
        muted = sorted({f.code for f in self.findings.values() if f.muted})
        if muted:
            lines.append(f"  muted: {', '.join(muted)}")
        return "\n".join(lines)


def write_report(path: str, report: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, allow_nan=False)
        handle.write("\n")
