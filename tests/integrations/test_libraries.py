"""cossim-tui on the libraries people train with (the ``[integrations]`` extra: lightly,
pytorch-lightning, sentence-transformers, pytorch-metric-learning), issue 18 item 7.

For each library a healthy script and one with a bug, in ``scripts/``: tiny randomly
initialised models and generated data, nothing downloaded (sentence-transformers' BERT is
built from a config and a vocabulary the script writes; the hub is off). Each script counts its
own calls and prints the count, and each test checks the steps against that count, the
findings, and the site: the user's line, with the library function as ``via`` where the call
was made inside the library.

The scripts run in this process under the agent (``agent_harness.run_script``, as ``check``
runs them), so each library is imported once for the whole module; one run goes through the
real ``check`` as well. A library that is not installed skips its tests, saying so. It is
looked up with ``find_spec`` rather than ``pytest.importorskip``: importing lightly here,
before the agent has patched torch, would bind the unpatched ``cosine_similarity`` into
lightly's module (``from torch.nn.functional import cosine_similarity``) for the rest of the
process, and its calls would never be seen; the scripts import it under the agent, as a
user's script does under ``cossim-tui``.

pytorch-metric-learning's losses (``NTXentLoss``, ``ContrastiveLoss`` with its
``CosineSimilarity``) compute similarity matrices of normalised rows, which the ``matrices``
branch makes visible; here its pairwise path is used, under ``--watch``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_harness import ScriptRun, run_script

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PML_WATCH = "pytorch_metric_learning.distances:CosineSimilarity.pairwise_distance=similarity"


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (the [integrations] extra: pip install -e '.[test,integrations]')")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may be downloaded: the hub is off for every script."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def run(capsys: pytest.CaptureFixture[str], script: str, *args: str, watch: tuple[str, ...] = ()) -> tuple[ScriptRun, int]:
    """The script run as ``check --fail-on warning`` runs it, and the count of calls it printed."""
    done = run_script(SCRIPTS / script, *args, fail_on="warning", watch=watch)
    printed = done.output  # (the harness keeps what the script printed)
    assert done.report["status"] == "finished", f"{done.report['exception']}\n{printed}"
    counted = re.search(r"(?:loss calls|pairs compared|pairs scored): (\d+)", printed)
    assert counted is not None, printed
    return done, int(counted.group(1))


def line_of(script: str, text: str) -> str:
    lines = (SCRIPTS / script).read_text().splitlines()
    found = [n for n, line in enumerate(lines, 1) if text in line]
    assert len(found) == 1, (script, text, found)
    return f"{script}:{found[0]}"


def loud(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["code"], f["site"]) for f in report["findings"] if f["severity"] in ("error", "warning")]


def codes_at(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["code"], f["severity"], f["site"]) for f in report["findings"]}


# -- lightly -----------------------------------------------------------------------------------

LIGHTLY_VIA = "lightly.loss.negative_cosine_similarity:NegativeCosineSimilarity.forward"


def test_lightly_simsiam_healthy_is_at_the_users_two_lines(capsys: pytest.CaptureFixture[str]) -> None:
    needs("lightly")
    done, calls = run(capsys, "lightly_simsiam.py")
    script = "lightly_simsiam.py"
    first, second = line_of(script, "first = criterion(z0, p1)"), line_of(script, "second = criterion(p0, x1=z1)")
    report = done.report
    assert report["steps"] == calls == 12
    # Two calls of the one loss from two lines: two sites, alternating, each named as written.
    assert [c["site"] for c in report["calls"]] == [first, second] * 6
    assert {c["via"] for c in report["calls"]} == {LIGHTLY_VIA}
    assert [[a["expr"] for a in c["args"]] for c in report["calls"][:2]] == [["z0", "p1"], ["p0", "z1"]]
    assert {a["made_by"]["module"] for c in report["calls"] for a in c["args"]} == {"SimSiam"}
    # SimSiam's stop-gradient is a detached partner by design (info); nothing louder.
    assert loud(report) == [] and done.returncode == 0
    assert {code for code, _, _ in codes_at(report)} <= {"detached-partner", "common-mode"}


def test_lightly_simsiam_second_view_from_the_first_input(capsys: pytest.CaptureFixture[str]) -> None:
    needs("lightly")
    done, calls = run(capsys, "lightly_simsiam.py", "--same-view")
    script = "lightly_simsiam.py"
    first, second = line_of(script, "first = criterion(z0, p1)"), line_of(script, "second = criterion(p0, x1=z1)")
    assert done.report["steps"] == calls
    assert loud(done.report) == [("identical-inputs", first), ("identical-inputs", second)]
    finding = next(f for f in done.report["findings"] if f["site"] == first)
    assert finding["count"] == calls // 2
    assert finding["message"] == "z0 and p1 were both made by SimSiam from the same input tensor"
    assert done.returncode == 1


def test_lightly_through_the_real_check(tmp_path: Path) -> None:
    """The same bug through ``cossim-tui check`` (lightly imported in the child after the agent
    patched torch, as a user's run has it): the report is the in-process one's."""
    needs("lightly")
    report_path = tmp_path / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", "--json", str(report_path), "--fail-on", "warning",
         "lightly_simsiam.py", "--same-view", "--steps", "2"],
        cwd=SCRIPTS, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "loss calls: 4" in done.stdout
    report = json.loads(report_path.read_text())
    script = "lightly_simsiam.py"
    first = line_of(script, "first = criterion(z0, p1)")
    assert report["steps"] == 4
    assert (report["calls"][0]["site"], report["calls"][0]["via"]) == (first, LIGHTLY_VIA)
    assert ("identical-inputs", first) in loud(report)


# -- sentence-transformers ---------------------------------------------------------------------


def test_sentence_transformers_healthy_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    needs("sentence_transformers")
    done, calls = run(capsys, "st_cosine_pairs.py")
    report = done.report
    site = line_of("st_cosine_pairs.py", "loss = loss_fn(features, scores)")
    assert report["steps"] == calls == 4
    assert {c["site"] for c in report["calls"]} == {site}
    assert {c["via"] for c in report["calls"]} == {
        "sentence_transformers.sentence_transformer.losses.cosine_similarity:CosineSimilarityLoss.compute_loss_from_embeddings"
    }
    # The loss made the tensors itself: they keep its names, and the model that made them.
    assert [a["expr"] for a in report["calls"][0]["args"]] == ["embeddings[0]", "embeddings[1]"]
    assert [a["made_by"]["module"] for a in report["calls"][0]["args"]] == ["SentenceTransformer"] * 2
    # Mean-pooled transformer embeddings share a large offset (common-mode, measured at every
    # step): information, not a warning, on this healthy recipe.
    assert loud(report) == [] and done.returncode == 0
    assert ("common-mode", "info", site) in codes_at(report)


def test_sentence_transformers_same_sentence_on_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    needs("sentence_transformers")
    done, calls = run(capsys, "st_cosine_pairs.py", "--same")
    site = line_of("st_cosine_pairs.py", "loss = loss_fn(features, scores)")
    assert done.report["steps"] == calls
    assert loud(done.report) == [("identical-inputs", site)]
    (finding,) = [f for f in done.report["findings"] if f["code"] == "identical-inputs"]
    assert finding["count"] == calls
    assert "SentenceTransformer from inputs with equal values" in finding["message"]


# -- pytorch-lightning -------------------------------------------------------------------------


def test_lightning_healthy_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    needs("pytorch_lightning")
    done, calls = run(capsys, "lightning_pairs.py")
    site = line_of("lightning_pairs.py", "similarity = F.cosine_similarity(first, partner, dim=1)")
    assert done.report["steps"] == calls == 5
    # Called in the user's training_step: the user's line, no via, though Lightning called it.
    assert {(c["site"], c["via"]) for c in done.report["calls"]} == {(site, None)}
    assert [a["expr"] for a in done.report["calls"][0]["args"]] == ["first", "partner"]
    assert loud(done.report) == [] and done.returncode == 0


def test_lightning_stale_partner(capsys: pytest.CaptureFixture[str]) -> None:
    needs("pytorch_lightning")
    done, calls = run(capsys, "lightning_pairs.py", "--stale")
    site = line_of("lightning_pairs.py", "similarity = F.cosine_similarity(first, partner, dim=1)")
    assert done.report["steps"] == calls
    assert loud(done.report) == [("stale-partner", site)]
    (finding,) = [f for f in done.report["findings"] if f["code"] == "stale-partner"]
    assert (finding["first_step"], finding["count"]) == (1, calls - 1)
    assert done.returncode == 1


# -- pytorch-metric-learning -------------------------------------------------------------------


@pytest.fixture
def pml_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--watch`` wraps the method on the class for the run; it is put back after the test."""
    needs("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity

    monkeypatch.setattr(CosineSimilarity, "pairwise_distance", CosineSimilarity.pairwise_distance)


def test_pml_pair_scores_healthy(capsys: pytest.CaptureFixture[str], pml_watched: None) -> None:
    done, calls = run(capsys, "pml_pair_scores.py", watch=(PML_WATCH,))
    site = line_of("pml_pair_scores.py", "scores = distance.pairwise_distance(a, b)")
    assert done.report["steps"] == calls == 5
    assert {(c["site"], c["via"]) for c in done.report["calls"]} == {(site, None)}
    assert [a["expr"] for a in done.report["calls"][0]["args"]] == ["a", "b"]
    assert done.report["findings"] == [] and done.returncode == 0


def test_pml_pair_scores_copy_paste(capsys: pytest.CaptureFixture[str], pml_watched: None) -> None:
    done, calls = run(capsys, "pml_pair_scores.py", "--copy-paste", watch=(PML_WATCH,))
    site = line_of("pml_pair_scores.py", "scores = distance.pairwise_distance(a, b)")
    assert done.report["steps"] == calls
    assert loud(done.report) == [("identical-values", site)]
    assert done.returncode == 1


# -- pytorch-metric-learning's NT-Xent: a similarity matrix computed inside the library ------------

PML_NTXENT_VIA = "pytorch_metric_learning.distances.dot_product_similarity:DotProductSimilarity.compute_mat"


def test_pml_ntxent_is_a_matrix_step_at_the_users_line(capsys: pytest.CaptureFixture[str]) -> None:
    needs("pytorch_metric_learning")
    done, calls = run(capsys, "pml_ntxent.py")
    site = line_of("pml_ntxent.py", "loss = criterion(embeddings, labels)")
    report = done.report
    assert report["steps"] == calls == 4
    assert {(c["site"], c["via"], c["kind"]) for c in report["calls"]} == {(site, PML_NTXENT_VIA, "matrix")}
    # The library normalised the rows of what the user handed it: named as the user wrote it.
    assert [a["expr"] for a in report["calls"][0]["args"]] == ["embeddings", "embeddings"]
    assert not [f for f in report["findings"] if f["severity"] == "error"]


def test_pml_ntxent_with_a_duplicated_sample_has_duplicate_rows(capsys: pytest.CaptureFixture[str]) -> None:
    needs("pytorch_metric_learning")
    done, calls = run(capsys, "pml_ntxent.py", "--duplicate")
    site = line_of("pml_ntxent.py", "loss = criterion(embeddings, labels)")
    assert done.report["steps"] == calls
    assert ("duplicate-rows", site) in loud(done.report)
    assert done.returncode == 1
