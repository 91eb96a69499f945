"""A similarity matrix step's figures (``agent.matrix``) against torch in float64, and its judge.

The figures are what the report's ``positives``/``negatives`` and the TUI's heat map show: each
is recomputed here from the matrix in float64, the way a reader would check it by hand.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cossim_tui.agent.matrix import PendingMatrix
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.diagnostics.judge import Judge
from cossim_tui.protocol import (
    CallSite,
    Finding,
    MatrixFigures,
    Spread,
    StepCaptured,
    TensorSummary,
    decode_message,
    encode_body,
)


def figures(x1: torch.Tensor, x2: torch.Tensor, labels=(None, None)) -> tuple[MatrixFigures, torch.Tensor]:
    result = x1 @ x2.T
    transfer = HostTransfer()
    pending = PendingMatrix(x1, x2, result, labels, transfer)
    transfer.fetch()
    found = pending.finish()
    assert found is not None
    return found, result.to(torch.float64)


def spread_of(values: torch.Tensor) -> tuple[float, float, float]:
    return values.min().item(), values.mean().item(), values.max().item()


def assert_spread(spread: Spread | None, expected: tuple[float, float, float]) -> None:
    assert spread is not None
    assert (spread.min, spread.mean, spread.max) == pytest.approx(expected, abs=1e-12)


def test_positives_are_the_diagonal_and_negatives_the_rest_in_float64() -> None:
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(9, 5)), F.normalize(torch.randn(9, 5))
    found, matrix = figures(a, b)
    eye = torch.eye(9, dtype=torch.bool)
    assert (found.rows, found.columns) == (9, 9)
    assert_spread(found.positives, spread_of(matrix[eye]))
    assert_spread(found.negatives, spread_of(matrix[~eye]))
    assert [v for row in found.heat for v in row] == pytest.approx(matrix.reshape(-1).tolist(), abs=1e-12)
    negatives = sorted(((matrix[i, j].item(), i, j) for i in range(9) for j in range(9) if i != j), reverse=True)[:5]
    assert [(h.value, h.row, h.column) for h in found.hardest] == pytest.approx(negatives)
    assert found.duplicates == [] and not found.by_labels and not found.self_similarity
    assert found.heat_positive == eye.tolist()


def test_labels_mark_the_positives_when_both_sides_have_them() -> None:
    torch.manual_seed(2)
    a, b = F.normalize(torch.randn(6, 4)), F.normalize(torch.randn(7, 4))
    first, second = torch.tensor([0, 1, 0, 2, 1, 3]), torch.tensor([1, 0, 2, 0, 4, 1, 3])
    found, matrix = figures(a, b, (first, second))
    same = first[:, None] == second[None, :]
    assert found.by_labels
    assert found.heat_positive == same.tolist()
    assert_spread(found.positives, spread_of(matrix[same]))
    assert_spread(found.negatives, spread_of(matrix[~same]))
    assert all(not same[h.row, h.column] for h in found.hardest)


def test_a_self_similarity_matrix_leaves_its_diagonal_out() -> None:
    torch.manual_seed(3)
    z = F.normalize(torch.randn(8, 6))
    found, matrix = figures(z, z)
    eye = torch.eye(8, dtype=torch.bool)
    assert found.self_similarity and found.positives is None
    assert_spread(found.negatives, spread_of(matrix[~eye]))


def test_equal_rows_within_a_side_are_found_with_their_row_numbers() -> None:
    torch.manual_seed(4)
    a, b = torch.randn(10, 6), torch.randn(10, 6)
    a[7] = a[2]
    a, b = F.normalize(a), F.normalize(b)
    found, _ = figures(a, b)
    assert found.duplicates == [[0, 2, 7]]
    b2 = b.clone()
    b2[9] = b2[0]
    assert figures(a, b2)[0].duplicates == [[0, 2, 7], [1, 0, 9]]
    # Rows that differ in one element only are not equal; zero rows are zero-norm's, not this.
    c = a.clone()
    c[7, 0] = torch.nextafter(c[7, 0], torch.tensor(2.0))
    c[3] = 0
    c[4] = 0
    assert figures(c, b)[0].duplicates == []


def _step(matrix: MatrixFigures) -> tuple[list[TensorSummary], MatrixFigures]:
    arg = TensorSummary(
        expr="z1", shape=[8, 4], dtype="float32", device="cpu", layout="torch.strided", numel=32, requires_grad=True,
        grad_fn=None, is_leaf=True, norm=None, rows=8, stats=None, nan=0, inf=0, preview=[], storage=None,
    )
    return [arg, TensorSummary(**{**{f: getattr(arg, f) for f in arg.__struct_fields__}, "expr": "z2"})], matrix


def test_negatives_like_positives_needs_three_steps_in_a_row_at_a_site() -> None:
    judge = Judge()
    alike = MatrixFigures(rows=8, columns=8, positives=Spread(0.9, 0.95, 1.0), negatives=Spread(0.8, 0.91, 1.0))
    apart = MatrixFigures(rows=8, columns=8, positives=Spread(0.9, 0.95, 1.0), negatives=Spread(-0.5, 0.1, 0.6))
    codes = []
    for step, figures_now in enumerate([alike, alike, apart, alike, alike, alike]):
        args, matrix = _step(figures_now)
        codes.append([f.code for f in judge.judge_matrix(step, "t.py:1", args, matrix, [])])
    assert codes == [[], [], [], [], [], ["negatives-like-positives"]]


def test_a_matrix_is_no_broadcast_and_a_self_similarity_matrix_no_same_object() -> None:
    judge = Judge()
    pair = [Finding("broadcast", "info", "", "t.py:1", 0), Finding("same-object", "error", "", "t.py:1", 0)]
    args, _ = _step(MatrixFigures(rows=8, columns=8, positives=None, negatives=None))
    two_sides = MatrixFigures(rows=8, columns=8, positives=None, negatives=None)
    one_side = MatrixFigures(rows=8, columns=8, positives=None, negatives=None, self_similarity=True)
    assert [f.code for f in judge.judge_matrix(0, "t.py:1", args, two_sides, pair)] == ["same-object"]
    assert judge.judge_matrix(0, "t.py:1", args, one_side, pair) == []


def test_a_step_recorded_before_matrices_decodes_as_a_pair() -> None:
    args, matrix = _step(MatrixFigures(rows=8, columns=8, positives=Spread(0.9, 0.95, 1.0), negatives=None))
    step = StepCaptured(
        step=0, function="matmul", site=CallSite("t.py", 1, "f", 1, [], 1, 1), args=args, relation=None, cos=None,
        error=None, findings=[], context={}, paused=False, matrix=matrix,
    )
    assert decode_message(encode_body(step)).matrix == matrix
    old = json.loads(encode_body(step))
    del old["matrix"]  # a trace line written before matrix steps existed
    assert decode_message(json.dumps(old)).matrix is None


def test_a_bank_of_keys_has_no_diagonal_positives_and_hard_negatives_keep_theirs() -> None:
    torch.manual_seed(5)
    queries = F.normalize(torch.randn(4, 6))
    bank, found = F.normalize(torch.randn(40, 6)), None
    found, matrix = figures(queries, bank)
    assert found.positives is None
    assert_spread(found.negatives, spread_of(matrix))
    with_hard_negatives, matrix = figures(queries, F.normalize(torch.randn(8, 6)))
    eye = torch.eye(4, 8, dtype=torch.bool)
    assert_spread(with_hard_negatives.positives, spread_of(matrix[eye]))


def test_a_normalised_tensor_is_forgotten_when_it_dies_and_its_input_is_not_kept_alive() -> None:
    import gc
    import weakref

    from cossim_tui.agent import intercept_matrix

    source = torch.randn(4, 3)
    out = F.normalize(source, dim=-1)
    intercept_matrix._remember(out, source)
    key, kept_source = id(out), weakref.ref(source)
    assert intercept_matrix._rows(out, False)[0] is out
    assert intercept_matrix._rows(out.T, True)[0] is out  # its transpose: its rows, as columns
    assert intercept_matrix._rows(out[:2], False) is not None and intercept_matrix._rows(out[:, :2], False) is None
    del out, source
    gc.collect()
    assert key not in intercept_matrix._normalised and kept_source() is None


def test_two_tensors_of_equal_rows_are_a_self_similarity_matrix() -> None:
    # pytorch-metric-learning normalises the embeddings once for each side: equal values, two tensors.
    torch.manual_seed(6)
    embeddings = torch.randn(8, 5)
    labels = torch.arange(4).repeat(2)
    found, matrix = figures(F.normalize(embeddings), F.normalize(embeddings), (labels, labels))
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(8, dtype=torch.bool)
    assert found.self_similarity and found.by_labels
    assert_spread(found.positives, spread_of(matrix[same]))
    assert not any(found.heat_positive[i][i] for i in range(8))
    judge = Judge()
    args, _ = _step(found)
    pair = [Finding("identical-values", "error", "", "t.py:1", 0)]
    assert judge.judge_matrix(0, "t.py:1", args, found, pair) == []


def test_the_matrix_is_recomputed_in_float64_for_precision_loss() -> None:
    torch.manual_seed(7)
    raw1, raw2 = torch.randn(70, 64, dtype=torch.float64), torch.randn(70, 64, dtype=torch.float64)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.bfloat16, None)):
        a, b = F.normalize(raw1.to(dtype), dim=-1), F.normalize(raw2.to(dtype), dim=-1)
        result = a @ b.T
        transfer = HostTransfer()
        pending = PendingMatrix(a, b, result, (None, None), transfer)
        transfer.fetch()
        pending.finish()
        rows = torch.linspace(0, 69, 64).long()
        exact = F.normalize(a.double(), dim=-1)[rows] @ F.normalize(b.double(), dim=-1).T
        expected = (exact - result.double()[rows]).abs().max().item()
        assert pending.deviation == pytest.approx(expected, abs=1e-15)
        if tolerance is not None:
            assert pending.deviation < tolerance
        else:
            assert pending.deviation > 1e-3  # bfloat16 rounding: precision-loss's warning
