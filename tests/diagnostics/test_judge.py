"""The pure judges, on hand-made summaries: each rule at its threshold, persistence, muting."""

from __future__ import annotations

import itertools
import math

import pytest

import builders
from cossim_tui.diagnostics.codes import CATALOG
from cossim_tui.diagnostics.judge import (
    COLLAPSE_SCORE,
    CONSTANT_STEPS,
    PERSIST_STEPS,
    PRECISION_TOLERANCE,
    PRECISION_WRONG,
    SATURATED_COS,
    Evidence,
    Judge,
    StaleMatch,
    compares_memory_with_itself,
    is_self_similarity_matrix,
)
from cossim_tui.protocol import Finding, Relation, Similarity, Spread, StorageInfo, TensorSummary, ValueStats

SITE = "train.py:42"
_memory = itertools.count(1)


# -- hand-made inputs -----------------------------------------------------------------------


def storage(shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0, ptr: int = 0x10000, size: int = 4) -> StorageInfo:
    start = ptr + offset * size
    low = sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides) if s >= 0)
    return StorageInfo(ptr=ptr, offset=offset, strides=list(strides), element_size=size,
                       span=[start + low * size, start + (high + 1) * size])


def contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def tensor(
    expr: str = "a",
    shape: tuple[int, ...] = (8, 32),
    *,
    grad: bool = False,
    norm: tuple[float, float, float] = (0.8, 1.0, 1.2),
    stats: tuple[float, float] | None = (-1.0, 1.0),
    nan: int = 0,
    inf: int = 0,
    store: StorageInfo | None = None,
    ptr: int | None = None,
) -> TensorSummary:
    if store is None:
        store = storage(shape, contiguous(shape), ptr=ptr if ptr is not None else 0x1000000 * next(_memory))
    return builders.tensor(
        expr, shape, grad_fn="AddmmBackward0" if grad else None, layout="strided",
        norm=Spread(*norm) if norm is not None else None,
        stats=ValueStats(min=stats[0], max=stats[1], mean=(stats[0] + stats[1]) / 2, std=0.5) if stats else None,
        nan=nan, inf=inf, storage=store,
    )


def relation(
    *, same: bool = False, shares: bool = False, equal: bool | None = False, dim_size: int = 32,
    broadcast: list[int] | None = None, dim: int = -1,
) -> Relation:
    return Relation(same_object=same, shares_storage=shares, equal_values=equal, max_abs_diff=None if equal is None else 0.5,
                    dim=dim, dim_size=dim_size, broadcast_shape=broadcast)


def cos(low: float, mean: float | None = None, high: float | None = None, *, nan: int = 0) -> Similarity:
    mean = low if mean is None else mean
    high = mean if high is None else high
    angle = math.degrees(math.acos(max(-1.0, min(1.0, mean)))) if math.isfinite(mean) else math.nan
    return Similarity(count=8, min=low, mean=mean, max=high, first=[mean], angle_deg=Spread(angle, angle, angle), nan=nan)


HEALTHY_COS = cos(-0.2, 0.1, 0.5)


def pair(a: str = "vector1", b: str = "vector2", **kw: object) -> list[TensorSummary]:
    return [tensor(a, **kw), tensor(b, **kw)]  # type: ignore[arg-type]


def judge_once(
    args: list[TensorSummary] | None = None,
    rel: Relation | None = None,
    similarity: Similarity | None = HEALTHY_COS,
    evidence: Evidence | None = None,
    judge: Judge | None = None,
    step: int = 0,
    site: str = SITE,
) -> list[Finding]:
    return (judge or Judge()).judge(
        step, site, args or pair(), rel if rel is not None else relation(), similarity, evidence or Evidence()
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> Finding:
    found = [f for f in findings if f.code == code]
    assert len(found) == 1, codes(findings)
    return found[0]


# -- a healthy step -------------------------------------------------------------------------


def test_a_healthy_step_has_no_findings() -> None:
    assert judge_once() == []


def test_severities_are_contracts() -> None:
    expected = {
        "same-object": "error", "shared-storage": "error", "identical-values": "error", "identical-inputs": "error",
        "stale-partner": "error", "degenerate-dim": "error", "zero-norm": "error", "non-finite": "error",
        "collapse": "error", "precision-loss": "warning", "nonnegative-features": "warning",
        "common-mode": "info", "saturated": "warning", "constant-similarity": "warning",
        "detached-partner": "info", "broadcast": "info",
        # CONTRACT's additions (second round): distributed runs.
        "same-batch-across-ranks": "error", "gathered-without-grad": "warning",
        # ... and similarity matrices.
        "duplicate-rows": "error", "negatives-like-positives": "error",
    }
    assert {code: info.severity for code, info in CATALOG.items()} == expected


# -- relations --------------------------------------------------------------------------------


def test_same_object() -> None:
    a = tensor("vector1")
    b = tensor("vector2", store=a.storage)
    found = judge_once([a, b], relation(same=True, shares=True, equal=True), cos(1.0))
    finding = only(found, "same-object")
    assert finding.severity == "error" and finding.site == SITE and finding.step == 0
    assert finding.message == "vector1 and vector2 are the same tensor object"
    # One cause, one finding: not also shared-storage or identical-values.
    assert codes(found) == ["same-object"]


def test_shared_storage_of_a_detached_view() -> None:
    a = tensor("vector1", grad=True)
    b = tensor("vector2", store=a.storage)
    found = judge_once([a, b], relation(shares=True, equal=True), cos(1.0))
    finding = only(found, "shared-storage")
    assert finding.message == "vector1 and vector2 are views of the same memory (one is a detached view of the other)"
    assert "identical-values" not in codes(found)
    assert "detached-partner" in codes(found)


def test_shared_storage_of_a_view_without_detach() -> None:
    a = tensor("emb")
    b = tensor("flat", store=a.storage)
    finding = only(judge_once([a, b], relation(shares=True, equal=True), cos(1.0)), "shared-storage")
    assert "detached" not in finding.message


def test_shared_storage_needs_the_relation() -> None:
    a = tensor("vector1")
    b = tensor("vector2", store=a.storage)
    assert judge_once([a, b], relation(shares=False)) == []


def self_matrix_pair(offset_b: int = 0, ptr_b: int = 0x10000) -> tuple[TensorSummary, TensorSummary, Relation]:
    # z (16, 32): z[:, None] is (16, 1, 32), z[None, :] is (1, 16, 32).
    a = tensor("z[:, None]", (16, 1, 32), store=storage((16, 1, 32), (32, 32, 1)))
    b = tensor("z[None, :]", (1, 16, 32), store=storage((1, 16, 32), (512, 32, 1), offset=offset_b, ptr=ptr_b))
    return a, b, relation(shares=True, equal=None, broadcast=[16, 16, 32])


def test_self_similarity_matrix_is_not_shared_storage() -> None:
    a, b, rel = self_matrix_pair()
    assert is_self_similarity_matrix(a, b, rel)
    found = judge_once([a, b], rel, cos(-0.3, 0.1, 1.0))
    assert codes(found) == ["broadcast"]
    assert only(found, "broadcast").severity == "info"
    assert only(found, "broadcast").message == "z[:, None] (16, 1, 32) and z[None, :] (1, 16, 32) were broadcast to (16, 16, 32)"


def test_is_self_similarity_matrix_only_for_one_memory_at_one_offset() -> None:
    a, b, rel = self_matrix_pair(ptr_b=0x90000)
    assert not is_self_similarity_matrix(a, b, rel)
    a, b, rel = self_matrix_pair(offset_b=32)
    assert not is_self_similarity_matrix(a, b, rel)
    a, b, rel = self_matrix_pair()
    assert not is_self_similarity_matrix(a, b, relation(shares=True))  # not broadcast
    same_place = tensor("z[:, None]", (16, 1, 32), store=a.storage)
    assert not is_self_similarity_matrix(a, same_place, rel)  # the singleton in the same place


def test_views_that_never_compare_an_element_with_itself_are_not_shared_storage() -> None:
    # z is (16, 32); interleaved pairs z[0::2] / z[1::2], consecutive rows z[:-1] / z[1:].
    even = tensor("z[0::2]", (8, 32), store=storage((8, 32), (64, 1)))
    odd = tensor("z[1::2]", (8, 32), store=storage((8, 32), (64, 1), offset=32))
    head = tensor("z[:-1]", (15, 32), store=storage((15, 32), (32, 1)))
    tail = tensor("z[1:]", (15, 32), store=storage((15, 32), (32, 1), offset=32))
    for a, b in ((even, odd), (head, tail)):
        rel = relation(shares=True)  # their address ranges overlap
        assert compares_memory_with_itself(a, b, rel) is False
        assert judge_once([a, b], rel) == []


def test_views_that_compare_elements_with_themselves_are_shared_storage() -> None:
    z = tensor("z", (16, 32), store=storage((16, 32), (32, 1)))
    first = tensor("z[:1]", (1, 32), store=storage((1, 32), (32, 1)))
    rel = relation(shares=True, equal=None, broadcast=[16, 32])
    assert compares_memory_with_itself(first, z, rel) is True  # row 0 against itself
    assert "shared-storage" in codes(judge_once([first, z], rel))
    square = tensor("w", (32, 32), store=storage((32, 32), (32, 1)))
    transposed = tensor("w.T", (32, 32), store=storage((32, 32), (1, 32)))
    assert compares_memory_with_itself(square, transposed, relation(shares=True)) is True  # the diagonal
    # Undecidable (different element sizes): the overlap the capture saw stands.
    half = tensor("z.view(torch.float16)", (16, 64), store=storage((16, 64), (64, 1), size=2))
    assert compares_memory_with_itself(z, half, relation(shares=True, equal=None, dim_size=64)) is None


def test_identical_values() -> None:
    found = judge_once(pair(), relation(equal=True), cos(1.0))
    finding = only(found, "identical-values")
    assert finding.severity == "error"
    assert finding.message == "vector1 and vector2 hold identical values in different memory"
    assert codes(judge_once(pair(), relation(equal=False))) == []
    assert codes(judge_once(pair(), relation(equal=None))) == []


def test_identical_zero_tensors_are_zero_norm_not_identical_values() -> None:
    zeros = pair(norm=(0.0, 0.0, 0.0), stats=(0.0, 0.0))
    found = judge_once(zeros, relation(equal=True), cos(0.0))
    assert codes(found) == ["zero-norm"]


def test_degenerate_dim_at_size_1_only() -> None:
    finding = only(judge_once(pair(shape=(1, 32)), relation(dim=0, dim_size=1), cos(-1.0, 0.2, 1.0)), "degenerate-dim")
    assert finding.message == "the similarity is taken over dim 0, which has size 1: every value is ±1 or 0"
    assert judge_once(pair(), relation(dim_size=2)) == []


def test_broadcast_is_info() -> None:
    args = [tensor("anchors", (1, 32)), tensor("positives", (8, 32))]
    finding = only(judge_once(args, relation(equal=None, broadcast=[8, 32])), "broadcast")
    assert finding.severity == "info"
    assert finding.message == "anchors (1, 32) and positives (8, 32) were broadcast to (8, 32)"


def test_no_relation_no_relation_findings() -> None:
    judge = Judge()
    assert judge.judge(0, SITE, pair(), None, HEALTHY_COS, Evidence()) == []


# -- stale partner ----------------------------------------------------------------------------


def test_stale_partner_same_memory_detached() -> None:
    match = StaleMatch(arg=1, earlier_step=3, earlier_arg=0, earlier_expr="vector1", same_memory=True, detached=True)
    finding = only(judge_once(evidence=Evidence(stale=[match])), "stale-partner")
    assert finding.severity == "error"
    assert finding.message == "vector2 is step 3's vector1 (same memory, detached)"
    assert finding.evidence == ["args.1"]


def test_stale_partner_same_memory_not_detached() -> None:
    match = StaleMatch(arg=1, earlier_step=0, earlier_arg=0, earlier_expr="vector1", same_memory=True, detached=False)
    assert only(judge_once(evidence=Evidence(stale=[match])), "stale-partner").message == "vector2 is step 0's vector1 (same memory)"


def test_stale_partner_copy() -> None:
    match = StaleMatch(arg=1, earlier_step=0, earlier_arg=0, earlier_expr="anchor", same_memory=False, detached=True)
    args = pair("anchor", "partner")
    assert only(judge_once(args, evidence=Evidence(stale=[match])), "stale-partner").message == (
        "partner is step 0's anchor (equal values, a copy)"
    )


def test_stale_partner_never_updated_only_for_the_same_expression_in_the_same_place() -> None:
    same = StaleMatch(arg=1, earlier_step=4, earlier_arg=1, earlier_expr="vector2", same_memory=True, detached=False)
    assert only(judge_once(evidence=Evidence(stale=[same])), "stale-partner").message.endswith("(never updated since)")
    renamed = StaleMatch(arg=1, earlier_step=4, earlier_arg=1, earlier_expr="other", same_memory=True, detached=False)
    assert "never updated" not in only(judge_once(evidence=Evidence(stale=[renamed])), "stale-partner").message


def test_two_stale_arguments_are_one_finding() -> None:
    matches = [
        StaleMatch(arg=0, earlier_step=1, earlier_arg=0, earlier_expr="vector1", same_memory=True, detached=False),
        StaleMatch(arg=1, earlier_step=1, earlier_arg=1, earlier_expr="vector2", same_memory=True, detached=False),
    ]
    finding = only(judge_once(evidence=Evidence(stale=matches)), "stale-partner")
    assert finding.message == (
        "vector1 is step 1's vector1 (same memory) (never updated since); vector2 is step 1's vector2 (same memory) (never updated since)"
    )
    assert finding.evidence == ["args.0", "args.1"]


# -- values -----------------------------------------------------------------------------------


def test_zero_norm_at_eps_and_not_above() -> None:
    eps = 1e-8
    at = [tensor("vector1", norm=(eps, 0.5, 1.0)), tensor("vector2")]
    finding = only(judge_once(at, evidence=Evidence(eps=eps)), "zero-norm")
    assert finding.severity == "error"
    assert finding.message.startswith("vector1 has vectors with norm ≤ eps (1e-08)")
    above = [tensor("vector1", norm=(eps * 1.01, 0.5, 1.0)), tensor("vector2")]
    assert judge_once(above, evidence=Evidence(eps=eps)) == []
    # The eps of the call counts: 1e-6 is zero for eps=1e-6.
    assert "zero-norm" in codes(judge_once([tensor("v", norm=(1e-6, 1, 1)), tensor("w")], evidence=Evidence(eps=1e-6)))


def test_zero_norm_in_both_is_one_finding_naming_both() -> None:
    args = [tensor("vector1", norm=(0.0, 0.5, 1.0)), tensor("vector2", norm=(0.0, 0.5, 1.0))]
    finding = only(judge_once(args), "zero-norm")
    assert "vector1" in finding.message and "vector2" in finding.message


def test_non_finite() -> None:
    finding = only(judge_once([tensor("vector1", nan=3), tensor("vector2")], similarity=cos(0.1, nan=2)), "non-finite")
    assert finding.severity == "error"
    assert finding.message == "vector1 has 3 NaN and 0 Inf; the similarity has 2 NaN"
    assert only(judge_once([tensor("a"), tensor("b", inf=1)]), "non-finite").message == "b has 0 NaN and 1 Inf"
    assert only(judge_once(similarity=cos(0.1, nan=1)), "non-finite").message == "the similarity has 1 NaN"


def test_precision_loss_above_tolerance_only() -> None:
    above = Evidence(precision_deviation=PRECISION_TOLERANCE * 1.01)
    finding = only(judge_once(evidence=above), "precision-loss")
    assert finding.severity == "warning"
    assert "(float32, float32)" in finding.message
    assert judge_once(evidence=Evidence(precision_deviation=PRECISION_TOLERANCE)) == []
    assert judge_once(evidence=Evidence(precision_deviation=0.0)) == []
    assert "precision-loss" in codes(judge_once(evidence=Evidence(precision_deviation=math.inf)))


def test_precision_loss_is_an_error_from_a_difference_of_0_1() -> None:
    """CONTRACT: off by 0.1 or more, the answer is wrong (an error, which fails check); below,
    it is imprecise (a warning)."""
    assert only(judge_once(evidence=Evidence(precision_deviation=0.0999)), "precision-loss").severity == "warning"
    for off in (PRECISION_WRONG, 0.998, math.inf):
        assert only(judge_once(evidence=Evidence(precision_deviation=off)), "precision-loss").severity == "error"


def test_a_wrong_result_explains_a_pinned_similarity() -> None:
    """An error explains ``saturated``: a result that float16 pins at 1 is precision-loss's."""
    judge, wrong = Judge(), Evidence(precision_deviation=0.5)
    pinned = [judge.judge(step, "s", pair(), relation(), cos(0.99995, 0.99998, 1.0), wrong) for step in range(PERSIST_STEPS + 1)]
    assert [codes(found) for found in pinned] == [["precision-loss"]] * (PERSIST_STEPS + 1)


def test_nonnegative_features() -> None:
    finding = only(judge_once(pair(stats=(0.0, 2.0))), "nonnegative-features")
    assert finding.severity == "warning"
    assert finding.message == "vector1 and vector2 are entirely ≥ 0: the similarity can only be in [0, 1]"
    # One side signed: the similarity can be negative.
    assert judge_once([tensor("vector1", stats=(0.0, 2.0)), tensor("vector2", stats=(-1e-6, 2.0))]) == []
    # All zero is zero-norm's business, not this one.
    zero = tensor("vector2", stats=(0.0, 0.0), norm=(1.0, 1.0, 1.0))
    assert judge_once([tensor("vector1", stats=(0.0, 2.0)), zero]) == []


def test_common_mode_threshold() -> None:
    finding = only(judge_once(evidence=Evidence(common_mode_drop=0.31)), "common-mode")
    assert finding.severity == "info"  # a warning until issue 18: healthy recipes carry the offset too
    assert finding.message == "a shared offset dominates: the mean cosine between rows drops by 0.31 after centring"
    assert judge_once(evidence=Evidence(common_mode_drop=0.3)) == []
    assert judge_once(evidence=Evidence(common_mode_drop=0.29)) == []


def test_common_mode_must_clear_the_threshold_beyond_its_noise() -> None:
    # A small batch measures the drop with a standard error: 0.45 ± 0.1 is not clearly above 0.3.
    assert judge_once(evidence=Evidence(common_mode_drop=0.45, common_mode_noise=0.1)) == []
    assert "common-mode" in codes(judge_once(evidence=Evidence(common_mode_drop=0.51, common_mode_noise=0.1)))
    assert "common-mode" in codes(judge_once(evidence=Evidence(common_mode_drop=0.31, common_mode_noise=0.001)))


def test_common_mode_is_not_reported_for_a_collapsed_batch() -> None:
    collapsed = Evidence(common_mode_drop=0.9, batch_collapse=[0.01, 0.02])
    assert "common-mode" not in codes(judge_once(evidence=collapsed))


def test_detached_partner() -> None:
    args = [tensor("p1", grad=True), tensor("z2.detach()")]
    finding = only(judge_once(args), "detached-partner")
    assert finding.severity == "info"
    assert finding.message == "p1 carries autograd history, z2.detach() does not: gradients flow through one side only"
    reverse = [tensor("target"), tensor("pred", grad=True)]
    assert only(judge_once(reverse), "detached-partner").message.startswith("pred carries autograd history, target does not")
    assert judge_once(pair(grad=True)) == []


# -- persistence ------------------------------------------------------------------------------


def run_steps(judge: Judge, steps: list[dict], site: str = SITE) -> list[list[str]]:
    out = []
    for step, kw in enumerate(steps):
        found = judge.judge(step, site, kw.get("args", pair()), kw.get("rel", relation()), kw.get("cos", HEALTHY_COS),
                            kw.get("evidence", Evidence()))
        out.append(codes(found))
    return out


def test_collapse_needs_three_consecutive_steps_below_the_threshold() -> None:
    below = {"evidence": Evidence(batch_collapse=[COLLAPSE_SCORE * 0.99, 0.9])}
    at = {"evidence": Evidence(batch_collapse=[COLLAPSE_SCORE, COLLAPSE_SCORE])}
    assert PERSIST_STEPS == 3
    result = run_steps(Judge(), [below, below, below, below])
    assert ["collapse" in c for c in result] == [False, False, True, True]
    assert all("collapse" not in c for c in run_steps(Judge(), [at] * 5))


def test_collapse_counter_resets_on_a_good_step() -> None:
    bad = {"evidence": Evidence(batch_collapse=[0.05, 0.05])}
    good = {"evidence": Evidence(batch_collapse=[0.8, 0.9])}
    unknown = {"evidence": Evidence(batch_collapse=[None, None])}
    result = run_steps(Judge(), [bad, bad, good, bad, bad, unknown, bad, bad, bad])
    assert ["collapse" in c for c in result] == [False, False, False, False, False, False, False, False, True]


def test_collapse_message_and_the_across_steps_score() -> None:
    judge = Judge()
    across = {"evidence": Evidence(batch_collapse=[None, None], ring_collapse=0.02)}
    run_steps(judge, [across, across])
    finding = only(judge.judge(2, SITE, pair(), relation(), HEALTHY_COS, Evidence(batch_collapse=[None, None], ring_collapse=0.02)), "collapse")
    assert finding.severity == "error"
    assert finding.message == "the vectors of different samples point the same way across recent steps: collapse score 0.020 (≈ 1 healthy) for 3 steps"
    # The within-batch score wins over the ring when there is one.
    judge = Judge()
    mixed = {"evidence": Evidence(batch_collapse=[0.8, None], ring_collapse=0.01)}
    assert all("collapse" not in c for c in run_steps(judge, [mixed] * 4))


def test_collapse_persistence_is_per_site() -> None:
    judge = Judge()
    bad = Evidence(batch_collapse=[0.01, 0.01])
    for step in range(4):
        site = ("a.py:1", "b.py:2")[step % 2]
        assert "collapse" not in codes(judge.judge(step, site, pair(), relation(), HEALTHY_COS, bad))
    assert "collapse" in codes(judge.judge(4, "a.py:1", pair(), relation(), HEALTHY_COS, bad))


def test_saturated_needs_three_steps_at_or_above_0_9999() -> None:
    pinned = {"cos": cos(SATURATED_COS, 0.99995, 1.0)}
    result = run_steps(Judge(), [pinned] * 4)
    assert ["saturated" in c for c in result] == [False, False, True, True]
    judge = Judge()
    run_steps(judge, [pinned, pinned])
    finding = only(judge.judge(2, SITE, pair(), relation(), cos(SATURATED_COS, 0.99995, 1.0), Evidence()), "saturated")
    assert finding.severity == "warning"
    assert finding.message == "every row has similarity ≥ 0.9999 for 3 steps"


def test_saturated_needs_every_row() -> None:
    one_row_below = {"cos": cos(0.99989, 0.99999, 1.0)}
    assert all("saturated" not in c for c in run_steps(Judge(), [one_row_below] * 5))


def test_saturated_resets_on_a_good_step_and_on_nan() -> None:
    pinned = {"cos": cos(0.99995, 0.99999, 1.0)}
    nan = {"cos": cos(math.nan, math.nan, math.nan, nan=8), "args": pair()}
    result = run_steps(Judge(), [pinned, pinned, {"cos": HEALTHY_COS}, pinned, pinned, nan, pinned, pinned])
    assert not any("saturated" in c for c in result)


def test_saturated_is_quiet_when_an_error_explains_it() -> None:
    explained = {"cos": cos(1.0), "rel": relation(equal=True)}
    result = run_steps(Judge(), [explained] * 4)
    assert all(c == ["identical-values"] for c in result)
    # ... and speaks up on the first step the error does not explain.
    judge = Judge()
    run_steps(judge, [explained] * 3)
    assert "saturated" in codes(judge.judge(3, SITE, pair(), relation(), cos(1.0), Evidence()))


def test_constant_similarity_needs_five_steps() -> None:
    same = {"cos": cos(0.1, 0.3, 0.5)}
    assert CONSTANT_STEPS == 5
    result = run_steps(Judge(), [same] * 6)
    assert ["constant-similarity" in c for c in result] == [False, False, False, False, True, True]
    judge = Judge()
    run_steps(judge, [same] * 4)
    finding = only(judge.judge(4, SITE, pair(), relation(), cos(0.1, 0.3, 0.5), Evidence()), "constant-similarity")
    assert finding.severity == "warning"
    assert finding.message == "the similarity has stayed at 0.3 for 5 steps"


def test_constant_similarity_tolerance_is_1e_7() -> None:
    within = [{"cos": cos(0.1, 0.3 + k * 0.9e-7, 0.5)} for k in range(5)]
    assert "constant-similarity" in run_steps(Judge(), within)[-1]
    beyond = [{"cos": cos(0.1, 0.3 + k * 1.1e-7, 0.5)} for k in range(8)]
    assert not any("constant-similarity" in c for c in run_steps(Judge(), beyond))


def test_constant_similarity_resets_when_the_rows_move() -> None:
    steps = [{"cos": cos(0.1, 0.3, 0.5)}] * 3 + [{"cos": cos(0.0, 0.3, 0.6)}] + [{"cos": cos(0.1, 0.3, 0.5)}] * 3
    assert not any("constant-similarity" in c for c in run_steps(Judge(), steps))
    steps = [{"cos": cos(0.1, 0.3, 0.5)}] * 4 + [{"cos": cos(math.nan)}] + [{"cos": cos(0.1, 0.3, 0.5)}] * 4
    assert not any("constant-similarity" in c for c in run_steps(Judge(), steps))


def test_constant_similarity_is_quiet_when_an_error_explains_it() -> None:
    zero = {"cos": cos(0.0), "args": pair(norm=(0.0, 0.0, 0.0), stats=(0.0, 0.0))}
    result = run_steps(Judge(), [zero] * 7)
    assert all(c == ["zero-norm"] for c in result)


def test_one_identical_pair_at_step_0_persists_nothing() -> None:
    a = tensor("vector1")
    first = {"args": [a, tensor("vector2", store=a.storage)], "rel": relation(same=True, shares=True, equal=True), "cos": cos(1.0)}
    later = [{"cos": cos(-0.3 + 0.01 * k, 0.1 + 0.01 * k, 0.6)} for k in range(8)]
    result = run_steps(Judge(), [first, *later])
    assert result[0] == ["same-object"]
    assert all(c == [] for c in result[1:])


# -- muting -----------------------------------------------------------------------------------


def test_ignore_mutes_only_the_named_codes() -> None:
    match = StaleMatch(arg=1, earlier_step=0, earlier_arg=0, earlier_expr="query", same_memory=False, detached=False)
    found = Judge(ignore={"stale-partner"}).judge(
        1, SITE, [tensor("q", grad=True), tensor("memory")], relation(), HEALTHY_COS, Evidence(stale=[match])
    )
    assert {f.code: f.muted for f in found} == {"stale-partner": True, "detached-partner": False}


@pytest.mark.parametrize("code", ["saturated", "constant-similarity"])
def test_muted_errors_still_explain(code: str) -> None:
    # A muted error is still the reason the similarity is pinned: no second finding for it.
    judge = Judge(ignore={"identical-values"})
    found = []
    for step in range(6):
        found = judge.judge(step, SITE, pair(), relation(equal=True), cos(1.0), Evidence())
    assert [f.code for f in found] == ["identical-values"] and found[0].muted


# -- identical inputs, and calls torch refused ----------------------------------------------


def test_identical_inputs_names_the_module_and_both_vectors() -> None:
    found = judge_once(evidence=Evidence(identical_inputs="VGG from the same input tensor"))
    finding = only(found, "identical-inputs")
    assert finding.severity == "error"
    assert finding.message == "vector1 and vector2 were both made by VGG from the same input tensor"
    assert finding.evidence == ["args.0.made_by", "args.1.made_by"]


def test_a_call_torch_refused_has_no_findings() -> None:
    a = tensor("vector1")
    b = tensor("vector2", store=a.storage)
    found = Judge().judge(0, SITE, [a, b], relation(same=True, shares=True, equal=True), None, Evidence(), "RuntimeError: bad dtype")
    assert found == []


def test_both_arguments_stale_as_the_same_expression_are_said_once() -> None:
    """``cos(a, a)`` where ``a`` is step 0's ``a``: one clause, not the same sentence twice."""
    matches = [
        StaleMatch(arg=0, earlier_step=0, earlier_arg=0, earlier_expr="a", same_memory=True, detached=False),
        StaleMatch(arg=1, earlier_step=0, earlier_arg=0, earlier_expr="a", same_memory=True, detached=False),
    ]
    finding = only(judge_once(pair("a", "a"), evidence=Evidence(stale=matches)), "stale-partner")
    assert finding.message == "a (both arguments) is step 0's a (same memory) (never updated since)"
    assert finding.evidence == ["args.0", "args.1"]
