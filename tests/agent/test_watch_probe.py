"""Custom pairs: ``--watch MODULE:FUNCTION`` and ``cossim_tui.probe(a, b)`` are steps like any
other, and neither changes what the script computes. A method's pair is its first two arguments
after ``self``; the result is read as the cosine only with ``=similarity``; a target that never
loads, or is not there, is said once in the script's output.

The scripts run in this process under the agent, as ``check --json`` runs them
(``agent_harness.run_script``, with ``--watch``'s targets); ``--watch`` and ``probe`` through the
real command, and without cossim-tui, stay in ``tests/integration/test_watch_probe.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_harness import ScriptRun, run_plain_here, run_script
from watch_project import write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


def _check(project: Path, *options: str, script: str = "train.py") -> tuple[ScriptRun, dict]:
    """``check --json REPORT --fail-on never OPTIONS SCRIPT`` from the project: the run (its
    ``output`` is what the command's stdout shows of the script) and the report."""
    watch = tuple(value for flag, value in zip(options[::2], options[1::2]) if flag == "--watch")
    assert len(watch) * 2 == len(options), options
    done = run_script(project / script, cwd=project, fail_on="never", watch=watch, threads=None)
    return done, done.report


def test_a_watched_method_compares_its_arguments_after_self(project: Path) -> None:
    """``--watch pytorch_metric_learning.distances:CosineSimilarity.compute_mat`` compares the two
    embeddings, not the distance object and the first embedding."""
    done, report = _check(project, "--watch", "mypkg.losses:Head.score", "--watch", "mypkg.losses:CosineSimilarity.compute_mat")
    assert done.returncode == 0, done.output
    score = report["calls"][0]
    assert [a["shape"] for a in score["args"]] == [[4, 8], [4, 8]]
    assert abs(score["args"][1]["norm_mean"] - 8**0.5) < 1e-5, "the second argument is torch.ones(4, 8)"
    _, report = _check(project, "--watch", "mypkg.losses:CosineSimilarity.compute_mat", script="kinds.py")
    assert [[a["shape"] for a in c["args"]] for c in report["calls"]] == [[[8, 16], [3, 16]]] * 4
    assert [[a["expr"] for a in c["args"]] for c in report["calls"]] == [["p", "torch.ones(3, 16)"]] * 4


def test_a_watched_result_is_a_similarity_only_when_the_user_says_so(project: Path) -> None:
    """byol's ``2 - 2·cos`` is near 0 when the pair agrees: read as a cosine it looked saturated
    and imprecise. Watched plainly (or as a distance) its arguments are judged, its result is not."""
    for kind in ("", "=distance", "=loss"):
        done, report = _check(project, "--watch", f"mypkg.losses:byol_loss{kind}", script="kinds.py")
        assert done.returncode == 0, done.output
        calls = report["calls"]
        assert [c["function"] for c in calls] == ["watch mypkg.losses:byol_loss"] * 4, kind
        assert [c["cos"] for c in calls] == [None] * 4, kind
        codes = {code for c in calls for code in c["codes"]}
        assert not codes & {"precision-loss", "saturated", "constant-similarity"}, (kind, codes)
        assert [a["expr"] for a in calls[0]["args"]] == ["p", "z"]
    _, report = _check(project, "--watch", "mypkg.losses:cos_sim=similarity", script="train.py")
    assert abs(report["calls"][0]["cos"]["mean"] - 1.0) < 1e-6, "said to be a similarity: read as one"


def test_a_watch_target_never_imported_is_said_once(project: Path) -> None:
    done, report = _check(project, "--watch", "mypkg.unused:cos_sim", "--watch", "nosuchpkg.losses:f", "--watch", "mypkg.losses:cos_sim")
    assert report["status"] == "finished"
    lines = [line for line in done.output.splitlines() if line.startswith("cossim-tui: --watch")]
    assert lines == [
        "cossim-tui: --watch mypkg.unused:cos_sim: mypkg.unused was never imported, so nothing was intercepted",
        "cossim-tui: --watch nosuchpkg.losses:f: nosuchpkg.losses was never imported, so nothing was intercepted",
    ]


def test_the_script_computes_the_same_with_and_without(project: Path) -> None:
    plain = run_plain_here(project / "train.py")
    done, _ = _check(project, "--watch", "mypkg.losses:cos_sim", "--watch", "mypkg.losses:Head.score")
    printed = [line for line in done.output.splitlines() if line.startswith(("cos_sim", "score"))]
    assert printed == plain.splitlines()


def test_a_watch_target_that_does_not_exist_is_said_and_the_script_runs(project: Path) -> None:
    done, report = _check(project, "--watch", "mypkg.losses:nope")
    assert "mypkg.losses has no nope" in done.output
    said = [line for line in done.output.splitlines() if "nope" in line]
    assert said == ["cossim-tui: --watch mypkg.losses:nope: mypkg.losses has no nope"], "once, and not again at the end"
    assert report["status"] == "finished"
    assert [c["function"] for c in report["calls"]] == ["probe"]
