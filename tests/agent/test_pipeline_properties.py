"""Property tests of the whole judging path at one call: capture, evidence and judges never
raise, whatever the shapes, dtypes, dims and values, and the similarity they report is torch's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cossim_tui.agent.capture import capture_pair
from cossim_tui.agent.evidence import EvidenceCollector
from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.diagnostics.judge import PRECISION_WRONG, Judge

SPECIALS = [math.nan, math.inf, -math.inf, 0.0, 1e20, -1e-20]


@st.composite
def pairs(draw):
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim))
    # The partner has the same shape, or one broadcast against it.
    other = [draw(st.sampled_from([n, 1])) if draw(st.booleans()) else n for n in shape]
    dtype = draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
    dim = draw(st.integers(-ndim, ndim - 1))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=generator, dtype=torch.float64)
    b = torch.randn(other, generator=generator, dtype=torch.float64)
    for tensor in (a, b):
        flat = tensor.view(-1)
        for _ in range(draw(st.integers(0, 2))):
            if flat.numel():
                flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    relation = draw(st.sampled_from(["independent", "same", "detached", "clone"]))
    a = a.to(dtype)
    b = {"independent": b.to(dtype), "same": a, "detached": a.detach(), "clone": a.clone()}[relation]
    return a, b, dim


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs(), st.integers(1, 3))
def test_capture_evidence_and_judges_never_raise(pair, repeats) -> None:
    a, b, dim = pair
    collector, judge = EvidenceCollector(), Judge()
    for step in range(repeats):
        try:
            result = F.cosine_similarity(a, b, dim=dim)
        except RuntimeError:
            result = None
        capture = capture_pair(a, b, dim, result, ("a", "b"))
        equal = capture.relation is not None and bool(capture.relation.equal_values or capture.relation.shares_storage)
        evidence = collector.observe(step, "site", ("a", "b"), a, b, dim, 1e-8, equal, result)
        findings = judge.judge(step, "site", capture.args, capture.relation, capture.cos, evidence)
        wrong = evidence.precision_deviation is not None and evidence.precision_deviation >= PRECISION_WRONG
        for f in findings:  # CONTRACT: precision-loss is an error where the result is off by 0.1 or more
            assert f.severity == ("error" if f.code == "precision-loss" and wrong else CATALOG[f.code].severity), f
        if result is not None and result.numel() and capture.cos is not None:
            expected = result.double()
            finite = torch.isfinite(expected)
            if bool(finite.all()):
                assert math.isclose(capture.cos.mean, float(expected.mean()), rel_tol=1e-5, abs_tol=1e-6)
                assert capture.cos.min == float(expected.min()) and capture.cos.max == float(expected.max())
