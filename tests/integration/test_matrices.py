"""Similarity matrices of normalised rows as steps: recognised however they are spelt, judged,
and reported with ``kind: "matrix"``; a model's own products never are steps.

The scripts run in this process under the agent as ``check`` runs them (``agent_harness``);
one ``check`` subprocess reads the report as other tools would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from agent_harness import run_script

from integration.live import REPO, run_check

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "matrix_losses.py"


def line_of(text: str) -> str:
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    found = [number for number, line in enumerate(lines, 1) if text in line]
    assert len(found) == 1, text
    return f"matrix_losses.py:{found[0]}"


def loud(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"] if f["severity"] in ("error", "warning")]


def test_a_healthy_infonce_loop_is_a_matrix_step_per_batch_however_the_product_is_spelt() -> None:
    run = run_script(SCRIPT, "healthy", "4")
    calls = run.report["calls"]
    assert run.report["steps"] == 4 and [c["kind"] for c in calls] == ["matrix"] * 4
    assert [(c["function"], c["site"], [a["expr"] for a in c["args"]]) for c in calls] == [
        ("matmul", line_of("logits = z1 @ z2.T"), ["z1", "z2.T"]),
        ("mm", line_of("torch.mm(z1, z2.t())"), ["z1", "z2.t()"]),
        ("matmul", line_of("torch.matmul(z1, z2.transpose(0, 1))"), ["z1", "z2.transpose(0, 1)"]),
        ("einsum", line_of('torch.einsum("ik,jk->ij", z1, z2)'), ["z1", "z2"]),
    ]
    for call in calls:
        # Two views of one sample against other samples: the contrast the loss trains on.
        assert call["args"][0]["shape"] == call["args"][1]["shape"] == [8, 12]
        assert call["positives"]["mean"] > call["negatives"]["mean"] + 0.3
        assert call["cos"]["min"] <= call["negatives"]["min"] and call["positives"]["max"] <= call["cos"]["max"]
        # Who made the rows: the encoder, from the normalised tensor's input.
        assert all(a["made_by"]["module"] == "Sequential" for a in call["args"])
    assert run.returncode == 0 and loud(run.report) == []


def test_the_figures_are_the_matrix_the_script_computed_in_float64() -> None:
    run = run_script(SCRIPT, "duplicate", "1")
    step = run.steps[0]
    # The script's step 0: the encoders are seeded, so the matrix is recomputed here the same way.
    torch.manual_seed(0)
    import torch.nn.functional as F
    from torch import nn

    def encoder() -> nn.Module:
        return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 12))

    images, texts = encoder(), encoder()
    data = torch.randn(64, 16)
    index = torch.arange(8)
    index[5] = index[3]
    with torch.no_grad():
        matrix = (F.normalize(images(data[index])) @ F.normalize(texts(data[index])).T).to(torch.float64)
    eye = torch.eye(8, dtype=torch.bool)
    figures = step.matrix
    assert figures is not None
    assert (figures.positives.min, figures.positives.mean, figures.positives.max) == pytest.approx(
        (matrix[eye].min().item(), matrix[eye].mean().item(), matrix[eye].max().item()), abs=1e-12
    )
    assert figures.negatives.mean == pytest.approx(matrix[~eye].mean().item(), abs=1e-12)
    assert [v for row in figures.heat for v in row] == pytest.approx(matrix.reshape(-1).tolist(), abs=1e-12)
    assert figures.hardest[0].value == pytest.approx(matrix[~eye].max().item(), abs=1e-12)


def test_a_sample_drawn_twice_into_the_batch_is_duplicate_rows_naming_the_rows() -> None:
    run = run_script(SCRIPT, "duplicate", "3")
    assert run.returncode == 1
    (finding,) = [f for f in run.report["findings"] if f["code"] == "duplicate-rows"]
    assert finding["severity"] == "error" and finding["site"] == line_of("logits = image.mm(text.T)")
    assert finding["count"] == 3
    assert "rows 3 and 5 of image" in finding["message"] and "rows 3 and 5 of text.T" in finding["message"]
    assert [c["codes"] for c in run.report["calls"]] == [["duplicate-rows"]] * 3


def test_a_collapsed_encoder_has_negatives_like_positives_once_it_persists() -> None:
    run = run_script(SCRIPT, "collapsed", "4")
    codes = [c["codes"] for c in run.report["calls"]]
    assert ["negatives-like-positives" in c for c in codes] == [False, False, True, True]
    (finding,) = [f for f in run.report["findings"] if f["code"] == "negatives-like-positives"]
    assert finding["severity"] == "error" and finding["first_step"] == 2 and finding["count"] == 2
    assert "duplicate-rows" not in {f["code"] for f in run.report["findings"]}  # near, not equal


def test_a_models_own_products_are_not_steps() -> None:
    run = run_script(SCRIPT, "model", "4")
    calls = run.report["calls"]
    assert run.report["steps"] == 4
    assert [(c["kind"], c["function"], c["positives"], c["negatives"]) for c in calls] == [
        ("pair", "cosine_similarity", None, None)
    ] * 4


def test_moco_positives_are_pairs_and_its_bank_of_keys_a_matrix_without_positives() -> None:
    run = run_script(SCRIPT, "moco", "4")
    calls = run.report["calls"]
    assert [(c["kind"], c["function"]) for c in calls] == [("pair", "einsum"), ("matrix", "einsum")] * 4
    for pair, matrix in zip(calls[::2], calls[1::2]):
        assert [a["expr"] for a in pair["args"]] == ["q", "k"] and pair["cos"]["min"] > 0.9
        assert [a["shape"] for a in matrix["args"]] == [[8, 12], [64, 12]]
        assert matrix["positives"] is None and matrix["negatives"]["max"] < pair["cos"]["min"]
    # The bank is one buffer, step after step: stale-partner, deliberate here (CONTRACT: --ignore).
    assert set(loud(run.report)) == {"stale-partner"}


def test_byol_row_wise_cosines_are_pair_steps_named_by_their_factors() -> None:
    """BYOL's loss never calls a cosine function: it multiplies normalised rows and sums them."""
    run = run_script(SCRIPT, "byol", "3")
    calls = run.report["calls"]
    site = line_of("return 2 - 2 * (x * y).sum(dim=-1)")
    assert run.report["steps"] == 3
    assert [(c["kind"], c["site"], [a["expr"] for a in c["args"]]) for c in calls] == [("pair", site, ["x", "y"])] * 3
    # Each row's cosine, as torch computes it, is the step's similarity (bounded, not a distance).
    assert all(-1.0 <= c["cos"]["min"] <= c["cos"]["mean"] <= c["cos"]["max"] <= 1.0 for c in calls)
    assert loud(run.report) == [] and run.returncode == 0


def test_byol_with_the_target_as_its_own_prediction_is_identical_values() -> None:
    run = run_script(SCRIPT, "byol-same", "3")
    assert "identical-values" in loud(run.report)
    assert [c["cos"]["min"] for c in run.report["calls"]] == pytest.approx([1.0] * 3, abs=1e-6)


def test_a_scripted_function_with_products_still_compiles_and_runs() -> None:
    run = run_script(SCRIPT, "scripted", "2")
    assert run.exited.status == "finished" and run.exited.exception is None, run.exited
    assert [c["kind"] for c in run.report["calls"]] == ["pair", "pair"]


def test_check_reports_matrix_steps_and_their_codes(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = run_check("--json", str(out), "tests/fixtures/matrix_losses.py", "duplicate", "2", cwd=REPO)
    assert done.returncode == 1, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [c["kind"] for c in report["calls"]] == ["matrix", "matrix"]
    for call in report["calls"]:
        assert set(call["positives"]) == set(call["negatives"]) == {"min", "mean", "max"}
        assert call["codes"] == ["duplicate-rows"]
    assert [f["code"] for f in report["findings"]] == ["duplicate-rows"]
    assert "duplicate-rows" in done.stdout


def test_a_bfloat16_matrix_near_its_positives_is_precision_loss(tmp_path: Path) -> None:
    script = tmp_path / "bf16_matrix.py"
    script.write_text(
        "import torch, torch.nn.functional as F\n"
        "torch.manual_seed(0)\n"
        "for step in range(2):\n"
        "    a = torch.randn(16, 256)\n"
        "    b = a + 0.1 * torch.randn(16, 256)\n"
        "    for dtype in (torch.float32, torch.bfloat16):\n"
        "        logits = F.normalize(a.to(dtype), dim=-1) @ F.normalize(b.to(dtype), dim=-1).T\n",
        encoding="utf-8",
    )
    run = run_script(script)
    codes = [(c["args"][0]["dtype"], c["codes"]) for c in run.report["calls"]]
    assert codes == [("float32", []), ("bfloat16", ["precision-loss"])] * 2
