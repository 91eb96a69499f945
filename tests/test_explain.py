"""``cossim_tui.explain(a, b)``: the diagnosis of one call in the notebook, with no child process.

It must find what an intercepted call finds from one call (no history), say it in its text, and
report the similarity torch computes (or the error torch raises) without changing the tensors;
and ``import cossim_tui`` alone must leave torch unloaded, so ``probe`` can stay in a script.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import cossim_tui
from agent_harness import KeptMessages, free_run, torch_restored
from cossim_tui.explanation import Explanation


def _pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    a = torch.randn(4, 8)
    broken = torch.randn(4, 8)
    broken[1, 2] = float("nan")
    return {
        "same-object": (a, a),
        "identical-values": (a, a.clone()),
        "degenerate-dim": (torch.randn(4, 1), torch.randn(4, 1)),
        "zero-norm": (torch.zeros(4, 8), torch.randn(4, 8)),
        "non-finite": (broken, torch.randn(4, 8)),
    }


@pytest.mark.parametrize("code", list(_pairs()))
def test_one_call_gets_the_finding_an_intercepted_call_gets(code: str) -> None:
    a, b = _pairs()[code]
    explanation = cossim_tui.explain(a, b)
    assert isinstance(explanation, Explanation)
    assert explanation.codes == [code]
    (finding,) = explanation.findings
    assert finding.severity == "error"
    assert f"error: {code}: {finding.message}" in str(explanation)
    assert repr(explanation).startswith(f"<Explanation {code}>\n")


def test_a_healthy_pair_has_no_findings_and_says_so() -> None:
    torch.manual_seed(1)
    explanation = cossim_tui.explain(torch.randn(4, 8), torch.randn(4, 8), names=("anchor", "positive"))
    assert explanation.codes == [] and explanation.error is None
    text = str(explanation)
    assert text.endswith("no findings")
    assert "  anchor: (4, 8) float32 cpu detached norm " in text
    assert "  positive: (4, 8) float32 cpu detached norm " in text
    assert "same object: no · shares storage: no · equal values: no" in text
    assert repr(explanation) == f"<Explanation no findings>\n{text}"


def test_the_similarity_is_torchs_and_the_tensors_are_untouched() -> None:
    torch.manual_seed(2)
    a = torch.randn(5, 16, requires_grad=True)
    b = torch.randn(5, 16)
    before = (a.detach().clone(), b.clone())
    explanation = cossim_tui.explain(a, b, dim=1, eps=1e-6)
    expected = F.cosine_similarity(a, b, dim=1, eps=1e-6).detach()
    cos = explanation.cos
    assert cos is not None and cos.count == 5
    assert (cos.min, cos.mean, cos.max) == pytest.approx((expected.min().item(), expected.mean().item(), expected.max().item()))
    assert cos.first == pytest.approx(expected.tolist())
    assert f"cosine similarity: mean {cos.mean:.6g} (min {cos.min:.6g}, max {cos.max:.6g}) over 5 rows" in str(explanation)
    assert torch.equal(a.detach(), before[0]) and torch.equal(b, before[1])
    assert a.grad is None and a.requires_grad and not b.requires_grad
    assert "a: (5, 16) float32 cpu leaf" in str(explanation)


def test_a_call_torch_rejects_is_explained_with_torchs_error() -> None:
    a, b = torch.randn(4, 8), torch.randn(3, 8)
    with pytest.raises(RuntimeError) as raised:
        F.cosine_similarity(a, b)
    explanation = cossim_tui.explain(a, b)
    assert explanation.error == f"RuntimeError: {raised.value}"
    assert explanation.cos is None
    assert str(explanation).startswith(f"torch raised RuntimeError: {raised.value}\n")


def test_explain_under_the_agent_is_not_a_step_of_the_script() -> None:
    """In a script run by cossim-tui the intercepted function is the agent's: explain calls
    torch's own, so the notebook-style check is not itself reported as a call."""
    a = torch.randn(4, 8)
    channel = KeptMessages()
    with torch_restored():
        free_run(channel).install()
        assert hasattr(F.cosine_similarity, "__cossim_tui_original__")
        explanation = cossim_tui.explain(a, a)
        F.cosine_similarity(a, torch.randn(4, 8))  # a call of the script's: one step
    assert explanation.codes == ["same-object"]
    assert [step.function for step in channel.steps] == ["cosine_similarity"]
    assert not hasattr(F.cosine_similarity, "__cossim_tui_original__")


def test_importing_cossim_tui_does_not_import_torch() -> None:
    code = (
        "import json, sys, cossim_tui; cossim_tui.probe(None, None); "
        "print(json.dumps(['torch' in sys.modules, callable(cossim_tui.__getattr__)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [False, True]
