"""``cossim_tui.explain(a, b, dim=-1)``: the same diagnosis in-process, for notebooks and the REPL.

No child process, no TUI: the pair goes through the agent's pipeline exactly as an
intercepted call does, once, with no history (so persistence-based codes such
as ``collapse`` across steps cannot fire from a single call). The result prints as a short
readable summary and exposes everything as attributes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.diagnostics.judge import Judge
from cossim_tui.protocol import AgentConfig, CallSite, Finding, Relation, Similarity, TensorSummary


@dataclass
class Explanation:
    args: list[TensorSummary]
    relation: Relation | None
    cos: Similarity | None
    findings: list[Finding]
    error: str | None = None

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def __str__(self) -> str:
        lines = []
        if self.error:
            lines.append(f"torch raised {self.error}")
        if self.cos is not None:
            lines.append(
                f"cosine similarity: mean {self.cos.mean:.6g} (min {self.cos.min:.6g}, max {self.cos.max:.6g}) "
                f"over {self.cos.count} row{'s' if self.cos.count != 1 else ''}"
            )
        for arg in self.args:
            norm = f"norm {arg.norm.mean:.4g}" if arg.norm else "norm n/a"
            autograd = arg.grad_fn or ("leaf" if arg.requires_grad else "detached")
            lines.append(f"  {arg.expr}: {tuple(arg.shape)} {arg.dtype} {arg.device} {autograd} {norm}")
        if self.relation is not None:
            r = self.relation
            equal = "n/a" if r.equal_values is None else ("yes" if r.equal_values else "no")
            lines.append(
                f"  same object: {'yes' if r.same_object else 'no'} · shares storage: "
                f"{'yes' if r.shares_storage else 'no'} · equal values: {equal}"
            )
        if not self.findings:
            lines.append("no findings")
        for finding in self.findings:
            lines.append(f"{finding.severity}: {finding.code}: {finding.message}")
            lines.extend(textwrap.wrap(f"fix: {CATALOG[finding.code].fix}", 96, initial_indent="  ", subsequent_indent="  "))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Explanation {', '.join(self.codes) or 'no findings'}>\n{self}"


def explain(a: Any, b: Any, dim: int = -1, eps: float = 1e-8, *, names: tuple[str, str] = ("a", "b")) -> Explanation:
    """Diagnose ``F.cosine_similarity(a, b, dim, eps)`` right here; the call itself is not changed.

    The pair goes through the agent's own pipeline (``agent.pipeline.Pipeline``), as an
    intercepted call would, with nothing before it and no pictures."""
    import torch.nn.functional as F

    from cossim_tui.agent.call import Call, Intercepted
    from cossim_tui.agent.pipeline import Pipeline

    cosine = getattr(F.cosine_similarity, "__cossim_tui_original__", F.cosine_similarity)
    result, error = None, None
    try:
        result = cosine(a, b, dim=dim, eps=eps)
    except Exception as exc:  # noqa: BLE001 - the explanation reports it
        error = exc
    config = AgentConfig(mode="run", break_on=["never"], pictures="none")
    pipeline = Pipeline(Judge(), set(), lambda: config, lambda findings: False)
    seen = Intercepted("explain", names, a, b, dim, eps, result, error, None)
    step = pipeline.capture(Call(seen, 0, _HERE, names, False, _HERE.label))
    return Explanation(step.args, step.relation, step.cos, step.findings, step.error)


_HERE = CallSite(path="explain", line=0, function="explain", first_line=0, lines=[], call_start=0, call_end=0)
"""Where an explained pair is: no call site of a script."""
