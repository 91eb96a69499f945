"""The numbers the user reads on screen for each cosine call are right: ``capture_pair``'s
per-argument summaries (shape, dtype, autograd node, norms along the reduced dim, value stats,
NaN/Inf counts, preview, storage), the relation between the two arguments (same object, shared
memory, equal values, broadcast) and the similarity statistics are checked against torch itself
and against float64 recomputations. Odd arguments (0-d, empty, integer, half precision, views,
meta, sparse, non-tensors, huge tensors) must summarise sensibly and never raise into the script.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cossim_tui.agent import summaries
from cossim_tui.agent.capture import capture_pair
from cossim_tui.protocol import TensorSummary


def cos_capture(a, b, dim=-1, exprs=("vector1", "vector2")):
    """What the agent captures for ``F.cosine_similarity(a, b, dim)``, as the interceptor calls it."""
    return capture_pair(a, b, dim, F.cosine_similarity(a, b, dim=dim), exprs)


def reference_norms(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.linalg.vector_norm(x.detach().double(), dim=dim).reshape(-1)


def assert_stats_match(summary: TensorSummary, x: torch.Tensor, rel: float = 1e-6) -> None:
    """min/max/mean/std (correction 1) of the finite values, against float64."""
    values = x.detach().double().reshape(-1)
    values = values[torch.isfinite(values)]
    assert summary.stats is not None
    scale = max(values.abs().max().item(), 1e-30)
    assert summary.stats.min == pytest.approx(values.min().item(), rel=rel, abs=rel * scale)
    assert summary.stats.max == pytest.approx(values.max().item(), rel=rel, abs=rel * scale)
    assert summary.stats.mean == pytest.approx(values.mean().item(), rel=rel, abs=rel * scale)
    expected_std = values.std(correction=1).item() if values.numel() > 1 else 0.0
    assert summary.stats.std == pytest.approx(expected_std, rel=rel, abs=rel * scale)


def assert_norms_match(summary: TensorSummary, x: torch.Tensor, dim: int, rel: float = 1e-6) -> None:
    norms = reference_norms(x, dim)
    assert summary.norm is not None
    assert summary.rows == norms.numel()
    assert summary.norm.min == pytest.approx(norms.min().item(), rel=rel)
    assert summary.norm.mean == pytest.approx(norms.mean().item(), rel=rel)
    assert summary.norm.max == pytest.approx(norms.max().item(), rel=rel)


# --------------------------------------------------------------------------------------
# Per-argument summaries
# --------------------------------------------------------------------------------------


def test_describes_each_argument_as_torch_does() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 32)
    vector1 = layer(torch.randn(4, 16))
    vector2 = vector1.detach()[[3, 2, 1, 0]]
    pair = cos_capture(vector1, vector2)
    first, second = pair.args
    assert (first.expr, second.expr) == ("vector1", "vector2")
    assert first.shape == [4, 32] and second.shape == [4, 32]
    assert first.dtype == "float32" and first.device == "cpu" and first.layout == "strided"
    assert first.numel == 128
    assert first.requires_grad is True and second.requires_grad is False
    assert first.grad_fn == type(vector1.grad_fn).__name__ == "AddmmBackward0"
    assert second.grad_fn is None
    assert first.is_leaf is False and second.is_leaf is True
    assert first.note is None and second.note is None
    assert first.sampled is False


def test_grad_fn_names_the_op_that_made_the_tensor() -> None:
    x = torch.randn(3, 8, requires_grad=True)
    pair = cos_capture(torch.relu(x), x * 2)
    assert [a.grad_fn for a in pair.args] == ["ReluBackward0", "MulBackward0"]


def test_requires_grad_leaf() -> None:
    w = torch.randn(3, 8, requires_grad=True)
    pair = cos_capture(w, torch.randn(3, 8))
    assert pair.args[0].requires_grad is True
    assert pair.args[0].is_leaf is True
    assert pair.args[0].grad_fn is None
    assert_stats_match(pair.args[0], w)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, -3])
def test_norms_along_the_reduced_dim(dim: int) -> None:
    torch.manual_seed(1)
    a = torch.randn(3, 4, 5) * torch.arange(1, 6)  # rows of visibly different lengths
    b = torch.randn(3, 4, 5)
    first, second = cos_capture(a, b, dim).args
    assert_norms_match(first, a, dim)
    assert_norms_match(second, b, dim)
    assert first.rows == 60 // a.shape[dim]


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_preview_is_the_first_vector_along_the_reduced_dim(dim: int) -> None:
    a = torch.arange(2 * 7 * 9, dtype=torch.float32).reshape(2, 7, 9)
    summary = cos_capture(a, torch.ones(2, 7, 9), dim).args[0]
    index = [0, 0, 0]
    index[dim] = slice(None)
    first_vector = a[tuple(index)]
    assert summary.preview == first_vector[: summaries.PREVIEW].tolist()
    assert len(summary.preview) == min(summaries.PREVIEW, a.shape[dim])


def test_value_stats_against_float64() -> None:
    torch.manual_seed(2)
    a = torch.randn(64, 128) * 3 + 0.5
    b = torch.rand(64, 128)
    first, second = cos_capture(a, b).args
    assert_stats_match(first, a)
    assert_stats_match(second, b)


def test_stats_of_a_single_element_have_zero_std() -> None:
    a = torch.tensor([[2.5]])
    summary = capture_pair(a, a.clone(), -1, None, ("a", "b")).args[0]
    assert summary.stats is not None
    assert (summary.stats.min, summary.stats.max, summary.stats.mean, summary.stats.std) == (2.5, 2.5, 2.5, 0.0)


def test_nan_and_inf_are_counted_and_stats_use_finite_values_only() -> None:
    a = torch.tensor(
        [
            [1.0, float("nan"), 2.0, 4.0],
            [float("inf"), 3.0, -1.0, float("-inf")],
            [0.5, -2.0, 1.5, 3.0],
            [2.0, 2.0, 1.0, 0.0],
        ]
    )
    summary = cos_capture(a, torch.ones(4, 4)).args[0]
    assert summary.nan == 1
    assert summary.inf == 2
    assert_stats_match(summary, a)
    # Norms over the rows that have one: the NaN and Inf rows are left out.
    finite_rows = reference_norms(a[2:], -1)
    assert summary.norm is not None
    assert summary.norm.min == pytest.approx(finite_rows.min().item())
    assert summary.norm.mean == pytest.approx(finite_rows.mean().item())
    assert summary.norm.max == pytest.approx(finite_rows.max().item())
    assert summary.preview[0] == 1.0 and math.isnan(summary.preview[1])


def test_all_nan_tensor_has_counts_and_no_stats() -> None:
    a = torch.full((2, 3), float("nan"))
    summary = cos_capture(a, torch.ones(2, 3)).args[0]
    assert summary.nan == 6 and summary.inf == 0
    assert summary.stats is None
    assert summary.norm is None


def test_storage_info_locates_the_memory() -> None:
    base = torch.randn(6, 8)
    view = base[2:5]
    summary = cos_capture(view, torch.randn(3, 8)).args[0]
    assert summary.storage is not None
    assert summary.storage.ptr == base.untyped_storage().data_ptr() == view.untyped_storage().data_ptr()
    assert summary.storage.offset == view.storage_offset() == 16
    assert summary.storage.strides == [8, 1]
    assert summary.storage.element_size == 4
    assert summary.storage.span == [view.data_ptr(), view.data_ptr() + 3 * 8 * 4]


# --------------------------------------------------------------------------------------
# Relation between the two arguments
# --------------------------------------------------------------------------------------


def test_same_tensor_passed_twice() -> None:
    z = torch.randn(4, 16)
    relation = cos_capture(z, z).relation
    assert relation is not None
    assert relation.same_object is True
    assert relation.shares_storage is True
    assert relation.equal_values is True
    assert relation.max_abs_diff == 0.0


@pytest.mark.parametrize(
    "make_pair",
    [
        pytest.param(lambda z: (z, z.detach()), id="detach"),
        pytest.param(lambda z: (z, z.data), id="data"),
        pytest.param(lambda z: (z.view(4, 16), z.view(4, 2, 8).view(4, 16)), id="view"),
        pytest.param(lambda z: (z[:3], z[1:]), id="overlapping-row-slices"),
        pytest.param(lambda z: (z.reshape(-1)[:40], z.reshape(-1)[24:]), id="overlapping-flat-slices"),
    ],
)
def test_views_of_one_memory_share_storage(make_pair) -> None:
    z = torch.randn(4, 16, requires_grad=True)
    a, b = make_pair(z)
    relation = capture_pair(a, b, -1, None, ("a", "b")).relation
    assert relation is not None
    assert relation.same_object is False
    assert relation.shares_storage is True


@pytest.mark.parametrize(
    "make_pair",
    [
        pytest.param(lambda z: (z[:2], z[2:]), id="disjoint-row-slices"),
        pytest.param(lambda z: (z.reshape(-1)[:32], z.reshape(-1)[32:]), id="disjoint-flat-halves"),
        pytest.param(lambda z: (z, z.clone()), id="clone"),
        pytest.param(lambda z: (z, torch.randn(4, 16)), id="unrelated"),
    ],
)
def test_separate_memory_does_not_share_storage(make_pair) -> None:
    z = torch.randn(4, 16)
    a, b = make_pair(z)
    relation = capture_pair(a, b, -1, None, ("a", "b")).relation
    assert relation is not None
    assert relation.shares_storage is False


def test_column_halves_of_one_tensor_do_not_share_memory() -> None:
    h = torch.randn(8, 64)
    q, k = h.chunk(2, dim=-1)
    relation = cos_capture(q, k).relation
    assert relation is not None
    assert relation.shares_storage is False


def test_clone_has_equal_values_and_zero_difference() -> None:
    z = torch.randn(5, 7)
    relation = cos_capture(z, z.clone()).relation
    assert relation is not None
    assert relation.same_object is False
    assert relation.shares_storage is False
    assert relation.equal_values is True
    assert relation.max_abs_diff == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_different_values_report_the_largest_difference(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    a = torch.randn(5, 7, dtype=dtype)
    b = a.clone()
    b[3, 4] += 0.25
    b[1, 1] -= 1.75
    relation = cos_capture(a, b).relation
    assert relation is not None
    assert relation.equal_values is False
    expected = (a.double() - b.double()).abs().max().item()
    if dtype == torch.float64:
        assert relation.max_abs_diff == expected
    else:
        assert relation.max_abs_diff == pytest.approx(expected, rel=1e-6)


def test_one_element_different_is_not_equal() -> None:
    a = torch.zeros(1000, 16)
    b = a.clone()
    b[999, 15] = 1e-30
    relation = capture_pair(a, b, -1, None, ("a", "b")).relation
    assert relation is not None
    assert relation.equal_values is False
    assert relation.max_abs_diff == pytest.approx(1e-30, rel=1e-6)


def test_different_shapes_are_broadcast_and_not_compared() -> None:
    z = torch.randn(5, 3)
    a, b = z[:, None], z[None, :]
    pair = cos_capture(a, b)
    relation = pair.relation
    assert relation is not None
    assert relation.broadcast_shape == list(torch.broadcast_shapes(a.shape, b.shape)) == [5, 5, 3]
    assert relation.equal_values is None
    assert relation.max_abs_diff is None
    assert relation.shares_storage is True
    assert relation.dim == -1 and relation.dim_size == 3
    assert pair.cos is not None and pair.cos.count == 25


def test_same_shapes_have_no_broadcast_shape() -> None:
    relation = cos_capture(torch.randn(4, 6), torch.randn(4, 6)).relation
    assert relation is not None
    assert relation.broadcast_shape is None


@pytest.mark.parametrize("dim, size", [(0, 3), (1, 5), (-1, 5), (-2, 3)])
def test_dim_and_dim_size(dim: int, size: int) -> None:
    relation = cos_capture(torch.randn(3, 5), torch.randn(3, 5), dim).relation
    assert relation is not None
    assert relation.dim == dim
    assert relation.dim_size == size


def test_dim_size_after_broadcasting() -> None:
    relation = cos_capture(torch.randn(4, 1), torch.randn(1, 6), dim=-1).relation
    assert relation is not None
    assert relation.broadcast_shape == [4, 6]
    assert relation.dim_size == 6


def test_positive_and_negative_dim_of_a_broadcast_call_agree() -> None:
    torch.manual_seed(4)
    a = torch.randn(2, 3, 4)
    b = torch.randn(3, 4)
    positive = cos_capture(a, b, dim=0).args[1]
    negative = cos_capture(a, b, dim=-3).args[1]
    assert (positive.rows, positive.preview, positive.norm) == (negative.rows, negative.preview, negative.norm)


# --------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------


def test_similarity_statistics_match_the_result() -> None:
    torch.manual_seed(5)
    a = torch.randn(40, 16)
    b = a + 0.8 * torch.randn(40, 16)
    result = F.cosine_similarity(a, b, dim=-1)
    cos = capture_pair(a, b, -1, result, ("a", "b")).cos
    values = result.double()
    assert cos is not None
    assert cos.count == 40
    assert cos.min == pytest.approx(values.min().item(), abs=1e-7)
    assert cos.mean == pytest.approx(values.mean().item(), abs=1e-6)
    assert cos.max == pytest.approx(values.max().item(), abs=1e-7)
    assert cos.first == pytest.approx(values[: summaries.FIRST_ROWS].tolist(), abs=1e-7)
    assert len(cos.first) == summaries.FIRST_ROWS
    assert cos.nan == 0
    angles = torch.rad2deg(torch.acos(values.clamp(-1, 1)))
    assert cos.angle_deg.min == pytest.approx(math.degrees(math.acos(values.max().item())), abs=1e-3)
    assert cos.angle_deg.max == pytest.approx(math.degrees(math.acos(values.min().item())), abs=1e-3)
    assert cos.angle_deg.mean == pytest.approx(angles.mean().item(), abs=1e-3)


def test_angles_of_opposite_and_orthogonal_vectors() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    cos = cos_capture(a, b).cos
    assert cos is not None
    assert cos.min == pytest.approx(-1.0) and cos.max == pytest.approx(1.0)
    assert cos.angle_deg.max == pytest.approx(180.0, abs=1e-3)
    assert cos.angle_deg.min == pytest.approx(0.0, abs=0.05)  # acos near 1 is steep: float32 cos 1-6e-8
    assert cos.angle_deg.mean == pytest.approx((180.0 + 90.0 + 0.0) / 3, abs=0.05)


def test_similarity_of_a_matrix_result_is_over_all_entries() -> None:
    torch.manual_seed(6)
    z = F.normalize(torch.randn(6, 8), dim=-1)
    result = F.cosine_similarity(z[:, None], z[None, :], dim=-1)
    cos = capture_pair(z[:, None], z[None, :], -1, result, ("z[:, None]", "z[None, :]")).cos
    assert cos is not None
    assert cos.count == 36
    assert cos.first == pytest.approx(result.reshape(-1)[:8].tolist())
    assert cos.max == pytest.approx(1.0, abs=1e-6)
    assert cos.mean == pytest.approx(result.double().mean().item(), abs=1e-6)


def test_nan_in_the_result_is_counted() -> None:
    a = torch.tensor([[1.0, float("nan")], [1.0, 2.0]])
    cos = cos_capture(a, torch.ones(2, 2)).cos
    assert cos is not None
    assert cos.nan == 1


def test_no_similarity_without_a_result() -> None:
    assert capture_pair(torch.randn(3, 4), torch.randn(3, 4), -1, None, ("a", "b")).cos is None


def test_float64_is_summarised_in_float64() -> None:
    torch.manual_seed(7)
    a = torch.randn(8, 32, dtype=torch.float64) * 1e-3 + 1.0
    b = torch.randn(8, 32, dtype=torch.float64)
    pair = cos_capture(a, b)
    assert pair.args[0].dtype == "float64"
    assert_stats_match(pair.args[0], a, rel=1e-12)
    assert_norms_match(pair.args[0], a, -1, rel=1e-12)
    result = F.cosine_similarity(a, b, dim=-1)
    assert pair.cos is not None and pair.cos.mean == pytest.approx(result.mean().item(), rel=1e-12)


# --------------------------------------------------------------------------------------
# Odd arguments: sensible summaries, never an exception
# --------------------------------------------------------------------------------------


def test_zero_dim_tensors() -> None:
    a, b = torch.tensor(2.0), torch.tensor(-3.0)
    result = F.cosine_similarity(a, b, dim=0)
    pair = capture_pair(a, b, 0, result, ("a", "b"))
    first = pair.args[0]
    assert first.shape == [] and first.numel == 1 and first.rows == 1
    assert first.stats is not None
    assert (first.stats.min, first.stats.max, first.stats.mean, first.stats.std) == (2.0, 2.0, 2.0, 0.0)
    assert first.preview == [2.0]
    assert first.norm is not None and first.norm.mean == 2.0
    assert pair.relation is not None and pair.relation.equal_values is False and pair.relation.max_abs_diff == 5.0
    assert pair.cos is not None and pair.cos.count == 1 and pair.cos.mean == pytest.approx(result.item())


def test_empty_tensors() -> None:
    a, b = torch.empty(0, 4), torch.empty(0, 4)
    pair = cos_capture(a, b)
    for summary in pair.args:
        assert summary.shape == [0, 4] and summary.numel == 0
        assert summary.note is not None and "empty" in summary.note
        assert summary.stats is None and summary.norm is None and summary.preview == []
    assert pair.relation is not None and pair.relation.equal_values is None and pair.relation.dim_size == 4
    assert pair.cos is None


def test_one_dimensional_vectors_with_dim_zero() -> None:
    torch.manual_seed(8)
    a, b = torch.randn(10), torch.randn(10)
    pair = cos_capture(a, b, dim=0)
    first = pair.args[0]
    assert first.rows == 1
    assert first.preview == a[: summaries.PREVIEW].tolist()
    assert_norms_match(first, a, 0)
    assert_stats_match(first, a)
    assert pair.relation is not None and pair.relation.dim_size == 10
    assert pair.cos is not None and pair.cos.count == 1
    assert pair.cos.mean == pytest.approx(F.cosine_similarity(a, b, dim=0).item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stats_are_those_of_the_stored_values(dtype: torch.dtype) -> None:
    torch.manual_seed(9)
    a = (torch.randn(16, 64) * 4).to(dtype)
    b = torch.randn(16, 64).to(dtype)
    pair = cos_capture(a, b)
    first = pair.args[0]
    assert first.dtype == str(dtype).removeprefix("torch.")
    # Against float64 of the same (rounded) data, not of the float32 it was made from.
    assert_stats_match(first, a, rel=1e-5)
    assert_norms_match(first, a, -1, rel=1e-5)
    assert first.preview == a[0, : summaries.PREVIEW].double().tolist()
    result = F.cosine_similarity(a, b, dim=-1)
    assert pair.cos is not None
    assert pair.cos.mean == pytest.approx(result.double().mean().item(), abs=1e-5)
    assert pair.cos.first == result[: summaries.FIRST_ROWS].double().tolist()


def test_large_float32_values_have_their_true_norm_and_std() -> None:
    torch.manual_seed(10)
    a = torch.randn(4, 8) * 1e20
    summary = cos_capture(a, torch.randn(4, 8)).args[0]
    assert_norms_match(summary, a, -1, rel=1e-5)
    assert_stats_match(summary, a, rel=1e-5)


def test_integer_tensors_are_summarised_although_torch_refuses_them() -> None:
    a = torch.arange(12).reshape(3, 4)
    b = a + 1
    with pytest.raises(RuntimeError):
        F.cosine_similarity(a, b)
    pair = capture_pair(a, b, -1, None, ("a", "b"))
    first = pair.args[0]
    assert first.dtype == "int64"
    assert first.note is None
    assert_stats_match(first, a)
    assert_norms_match(first, a, -1)
    assert first.preview == [0.0, 1.0, 2.0, 3.0]
    assert pair.relation is not None
    assert pair.relation.equal_values is False and pair.relation.max_abs_diff == 1.0
    assert pair.cos is None


def test_bool_tensors_are_summarised() -> None:
    a = torch.tensor([[True, False, True], [False, False, True]])
    pair = capture_pair(a, a.clone(), -1, None, ("a", "b"))
    assert pair.args[0].dtype == "bool"
    assert pair.args[0].stats is not None and pair.args[0].stats.mean == pytest.approx(0.5)
    assert pair.relation is not None and pair.relation.equal_values is True


def test_transposed_non_contiguous_tensor() -> None:
    torch.manual_seed(11)
    base = torch.randn(7, 5)
    t = base.t()
    assert not t.is_contiguous()
    pair = cos_capture(t, torch.randn(5, 7))
    first = pair.args[0]
    assert first.shape == [5, 7]
    assert first.preview == base[: summaries.PREVIEW, 0].tolist()
    assert_norms_match(first, t, -1)
    assert_stats_match(first, t)
    assert first.storage is not None and first.storage.strides == [1, 5]
    assert first.storage.ptr == base.untyped_storage().data_ptr()


def test_expanded_tensor_with_stride_zero() -> None:
    torch.manual_seed(12)
    row = torch.randn(1, 9)
    expanded = row.expand(6, 9)
    pair = cos_capture(expanded, torch.randn(6, 9))
    first = pair.args[0]
    assert first.shape == [6, 9] and first.rows == 6
    assert first.storage is not None and first.storage.strides == [0, 1]
    assert first.storage.span == [row.data_ptr(), row.data_ptr() + 9 * 4]
    assert_norms_match(first, expanded, -1)
    assert first.norm is not None and first.norm.min == pytest.approx(first.norm.max)
    assert_stats_match(first, expanded)
    relation = cos_capture(expanded, row.expand(6, 9)).relation
    assert relation is not None and relation.shares_storage is True and relation.equal_values is True


def test_tensors_made_under_inference_mode() -> None:
    with torch.inference_mode():
        a = torch.randn(3, 8)
        b = a * 2
        result = F.cosine_similarity(a, b)
    assert a.is_inference()
    pair = capture_pair(a, b, 1, result, ("a", "b"))
    assert_stats_match(pair.args[0], a)
    assert_norms_match(pair.args[1], b, 1)
    assert pair.relation is not None and pair.relation.equal_values is False
    assert pair.cos is not None and pair.cos.min == pytest.approx(1.0, abs=1e-6)


def test_meta_tensor_gets_a_note() -> None:
    a = torch.empty(3, 4, device="meta")
    b = torch.empty(3, 4, device="meta")
    result = F.cosine_similarity(a, b)
    pair = capture_pair(a, b, 1, result, ("a", "b"))
    for summary in pair.args:
        assert summary.note is not None and "meta" in summary.note
        assert summary.shape == [3, 4] and summary.device == "meta"
        assert summary.stats is None and summary.storage is None
    assert pair.relation is not None and pair.relation.equal_values is None
    assert pair.cos is None


def test_sparse_coo_tensor_gets_a_note() -> None:
    sparse = torch.eye(4).to_sparse()
    dense = torch.randn(4, 4)
    pair = capture_pair(sparse, dense, -1, None, ("sparse", "dense"))
    first, second = pair.args
    assert first.layout == "sparse_coo"
    assert first.note is not None and "sparse" in first.note
    assert first.shape == [4, 4] and first.stats is None
    assert second.note is None
    assert_stats_match(second, dense)
    assert pair.relation is not None and pair.relation.equal_values is None


def test_non_tensor_argument_gets_a_note() -> None:
    a = torch.randn(3, 4)
    pair = capture_pair(a, 0.5, -1, None, ("a", "threshold"))
    first, second = pair.args
    assert second.expr == "threshold"
    assert second.note is not None and "not a tensor" in second.note and "float" in second.note
    assert second.stats is None
    assert_stats_match(first, a)
    assert pair.relation is None
    assert capture_pair(None, a, -1, None, ("x", "a")).args[0].note == "not a tensor (NoneType)"


def test_dim_out_of_range_still_summarises_the_arguments() -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(IndexError):
        F.cosine_similarity(a, b, dim=4)
    pair = capture_pair(a, b, 4, None, ("a", "b"))
    assert [s.shape for s in pair.args] == [[3, 4], [3, 4]]
    assert_stats_match(pair.args[0], a)


def test_negative_dim_out_of_range_does_not_raise() -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    pair = capture_pair(a, b, -3, None, ("a", "b"))
    assert_stats_match(pair.args[0], a)


def test_large_tensor_is_sampled_and_stats_stay_close() -> None:
    torch.manual_seed(13)
    columns = 64
    rows = summaries.SAMPLE_LIMIT // columns + 1  # just above the limit, and above the rows a sample keeps
    big = torch.randn(rows, columns)
    big[:, 0] += 2.0
    assert big.numel() > summaries.SAMPLE_LIMIT
    other = big.flip(0)
    pair = capture_pair(big, other, -1, None, ("big", "other"))
    summary = pair.args[0]
    assert summary.sampled is True
    assert summary.numel == big.numel() and summary.shape == [rows, columns]
    assert summary.rows == summaries.SAMPLE_LIMIT // columns  # evenly spaced rows of at most SAMPLE_LIMIT values
    assert summary.preview == big[0, : summaries.PREVIEW].tolist()
    values = big.double()
    assert summary.stats is not None
    assert summary.stats.mean == pytest.approx(values.mean().item(), abs=0.01)
    assert summary.stats.std == pytest.approx(values.std().item(), rel=0.01)
    assert values.min().item() <= summary.stats.min < -3.0
    assert 3.0 < summary.stats.max <= values.max().item()
    norms = reference_norms(big, -1)
    assert summary.norm is not None
    assert summary.norm.mean == pytest.approx(norms.mean().item(), rel=0.01)
    assert norms.min().item() <= summary.norm.min <= summary.norm.max <= norms.max().item()
    relation = pair.relation
    assert relation is not None and relation.equal_values is False and relation.shares_storage is False


def test_small_tensor_is_not_sampled() -> None:
    pair = cos_capture(torch.randn(5000, 8), torch.randn(5000, 8))
    assert [a.sampled for a in pair.args] == [False, False]
    assert pair.args[0].rows == 5000


# --------------------------------------------------------------------------------------
# Property: any small float input is summarised, and the similarity is the result's
# --------------------------------------------------------------------------------------

_DTYPES = {torch.float16: 16, torch.float32: 32, torch.float64: 64}


@st.composite
def cosine_calls(draw):
    dtype = draw(st.sampled_from(list(_DTYPES)))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    numel = math.prod(shape)
    width = _DTYPES[dtype]
    special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0])
    ordinary = st.floats(-1e3, 1e3, width=width) if draw(st.booleans()) else st.floats(width=width, allow_nan=False, allow_infinity=False)
    element = st.one_of(ordinary, special) if draw(st.booleans()) else ordinary
    values = [draw(st.lists(element, min_size=numel, max_size=numel)) for _ in range(2)]
    a = torch.tensor(values[0], dtype=dtype).reshape(shape)
    b = torch.tensor(values[1], dtype=dtype).reshape(shape)
    if draw(st.booleans()):
        b = a.clone()
    return a, b, dim


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cosine_calls())
def test_property_capture_never_raises_and_reports_the_result(call) -> None:
    a, b, dim = call
    result = F.cosine_similarity(a, b, dim)
    pair = capture_pair(a, b, dim, result, ("a", "b"))
    assert [s.shape for s in pair.args] == [list(a.shape), list(b.shape)]
    assert pair.relation is not None and pair.relation.dim_size == a.shape[dim]
    assert pair.cos is not None and pair.cos.count == result.numel()
    for summary, x in zip(pair.args, (a, b)):
        assert summary.nan == int(torch.isnan(x).sum())
        assert summary.inf == int(torch.isinf(x).sum())
    assume(bool(torch.isfinite(a).all() and torch.isfinite(b).all()))
    expected = result.double().mean().item()
    if math.isnan(expected):
        assert math.isnan(pair.cos.mean)
    else:
        assert pair.cos.mean == pytest.approx(expected, abs=1e-6, rel=1e-6)
    if a.abs().max() < 1e3 and b.abs().max() < 1e3:
        assert_stats_match(pair.args[0], a, rel=1e-5)


def test_a_complex_pair_is_summarised_without_a_warning_in_the_scripts_output() -> None:
    """The agent's own work must never write to the script's stderr: comparing two complex
    tensors once cast them to a real dtype, and torch warned about the discarded imaginary part."""
    import warnings

    a, b = torch.randn(4, 8, dtype=torch.complex64), torch.randn(4, 8, dtype=torch.complex64)
    with pytest.raises(RuntimeError):
        F.cosine_similarity(a, b)  # torch refuses complex tensors; the step is still reported
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capture = capture_pair(a, b, -1, None, ("vector1", "vector2"))
    assert [str(w.message) for w in caught] == []
    assert capture.relation is not None and capture.relation.equal_values is False
    assert capture.relation.max_abs_diff == pytest.approx(float((a - b).abs().max()), rel=1e-6)
