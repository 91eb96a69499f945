"""Every finding code on a realistic script that triggers it, and on its healthy twin.

Each fixture in ``tests/fixtures/diagnostics`` runs as under ``python -m cossim_tui check --json
REPORT --fail-on info``. A trigger ``<code>.py`` (or ``<code>_<variant>.py``) must report the code
with CONTRACT's severity at the line marked ``# SITE``; its twin ``<code>_healthy.py`` must not,
and must report no error or warning at all (inherent info findings are named in the twin's
docstring). The ``quiet_*`` scripts are legitimate situations that look suspicious (a deliberate
self-similarity matrix, a SimSiam step, a triplet...): no error or warning may fire.

A ``check`` subprocess costs about two seconds (the child imports torch), so the matrix runs each
script in this process under the same agent (``agent_harness.run_script``: the agent's settings,
the script's argv, ``__main__``, ``sys.path[0]`` and cwd, the report and the exit status as
``check`` makes them). A few scripts still go through the real ``check`` at the end of this file,
and their report must be the in-process one: the outside contract, and the proof that the
harness checks what ``check`` does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_harness import run_script

# Its module-scoped fixtures run once for several tests: all of them on one worker (pyproject).
pytestmark = pytest.mark.xdist_group("test_fixtures")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "diagnostics"
RUN_TIMEOUT = 180.0

# CONTRACT.md's table, written out here on purpose: the test checks the code, not its own copy.
SEVERITY = {
    "same-object": "error",
    "shared-storage": "error",
    "identical-values": "error",
    "identical-inputs": "error",
    "stale-partner": "error",
    "degenerate-dim": "error",
    "zero-norm": "error",
    "non-finite": "error",
    "collapse": "error",
    # A warning, and an error where the result is off by 0.1 or more: the fixture's rows read 0
    # where float64 says about 0.9.
    "precision-loss": "error",
    "nonnegative-features": "warning",
    # Info since issue 18: standard healthy recipes have the same offset (README, "Finding codes").
    "common-mode": "info",
    "saturated": "warning",
    "constant-similarity": "warning",
    "detached-partner": "info",
    "broadcast": "info",
}


@dataclass(frozen=True)
class Trigger:
    code: str
    also: frozenset[str] = frozenset()
    """Other codes that may fire as well, inherent to the situation."""
    status: str = "finished"


def trigger(code: str, *also: str, status: str = "finished") -> Trigger:
    return Trigger(code, frozenset(also), status)


TRIGGERS: dict[str, Trigger] = {
    "same-object.py": trigger("same-object"),
    "shared-storage.py": trigger("shared-storage", "detached-partner"),
    "shared-storage_view.py": trigger("shared-storage"),
    # The same input twice through a deterministic model: equal vectors, and equal inputs.
    "identical-values.py": trigger("identical-values", "identical-inputs"),
    "identical-inputs.py": trigger("identical-inputs"),
    "identical-values_clone.py": trigger("identical-values"),
    "stale-partner.py": trigger("stale-partner", "detached-partner"),
    "stale-partner_clone.py": trigger("stale-partner", "detached-partner"),
    # The recycled partner still holds its freed graph: the script's next backward() raises.
    "stale-partner_attached.py": trigger("stale-partner", status="error"),
    "degenerate-dim.py": trigger("degenerate-dim"),
    "zero-norm.py": trigger("zero-norm"),
    "non-finite.py": trigger("non-finite"),
    "collapse.py": trigger("collapse"),
    # Pinned at 1 for a step before the across-steps collapse has persisted long enough.
    "collapse_across-steps.py": trigger("collapse", "saturated"),
    "precision-loss.py": trigger("precision-loss"),
    "nonnegative-features.py": trigger("nonnegative-features", "common-mode"),
    "common-mode.py": trigger("common-mode"),
    "saturated.py": trigger("saturated"),
    "constant-similarity.py": trigger("constant-similarity"),
    "detached-partner.py": trigger("detached-partner"),
    "broadcast.py": trigger("broadcast"),
}

# Twin -> the code it must not report (nor any error or warning).
TWINS: dict[str, str] = {
    "same-object_healthy.py": "same-object",
    "shared-storage_healthy.py": "shared-storage",
    "identical-values_healthy.py": "identical-values",
    "identical-inputs_healthy.py": "identical-inputs",
    "stale-partner_healthy.py": "stale-partner",
    "degenerate-dim_healthy.py": "degenerate-dim",
    "zero-norm_healthy.py": "zero-norm",
    "non-finite_healthy.py": "non-finite",
    "collapse_healthy.py": "collapse",
    "collapse_across-steps_healthy.py": "collapse",
    "precision-loss_healthy.py": "precision-loss",
    "nonnegative-features_healthy.py": "nonnegative-features",
    "common-mode_healthy.py": "common-mode",
    "saturated_healthy.py": "saturated",
    "constant-similarity_healthy.py": "constant-similarity",
    "detached-partner_healthy.py": "detached-partner",
    "broadcast_healthy.py": "broadcast",
}

# Quiet script -> the info codes it may (inherently) report. No error or warning at all.
QUIET: dict[str, frozenset[str]] = {
    "quiet_self_similarity_matrix.py": frozenset({"broadcast"}),
    "quiet_simsiam.py": frozenset({"detached-partner"}),
    "quiet_random_embeddings.py": frozenset(),
    "quiet_float16.py": frozenset(),
    "quiet_1d_vectors.py": frozenset(),
    "quiet_triplet.py": frozenset(),
    "quiet_pairs_in_one_batch.py": frozenset(),
    "quiet_query_vs_keys.py": frozenset(),
    "quiet_eval_repeats.py": frozenset(),
}
STEP0_ONLY = "quiet_identical_at_step0.py"

ALL_SCRIPTS = [*TRIGGERS, *TWINS, *QUIET, STEP0_ONLY]


@dataclass
class CheckRun:
    script: str
    returncode: int
    report: dict[str, Any] | None
    output: str

    def findings(self, code: str | None = None) -> list[dict[str, Any]]:
        assert self.report is not None, f"{self.script}: no report\n{self.output}"
        return [f for f in self.report["findings"] if code is None or f["code"] == code]

    def codes(self) -> set[str]:
        return {f["code"] for f in self.findings()}

    def loud(self) -> list[dict[str, Any]]:
        return [f for f in self.findings() if f["severity"] in ("error", "warning")]


class Runs:
    """Each script run once, when a test first asks for it."""

    def __init__(self) -> None:
        self._done: dict[str, CheckRun] = {}

    def __getitem__(self, script: str) -> CheckRun:
        if script not in self._done:
            run = run_script(FIXTURES / script, fail_on="info")
            self._done[script] = CheckRun(script, run.returncode, run.report, "")
        return self._done[script]


@pytest.fixture(scope="module")
def runs() -> Runs:
    return Runs()


def result(runs: Runs, script: str, status: str = "finished") -> CheckRun:
    run = runs[script]
    assert run.report is not None, f"{script}: check wrote no report (exit {run.returncode})\n{run.output}"
    assert run.report["status"] == status, f"{script}: {run.report['status']} {run.report['exception']}\n{run.output}"
    # --fail-on info: any finding gives 1 (even when the script failed), none gives 0.
    assert run.returncode == (1 if run.report["findings"] else 0 if status == "finished" else 3), run.output
    return run


def site_of(script: str, tag: str = "") -> str:
    """``script:line`` of the call marked ``# SITE`` (or ``# SITE tag``) in the fixture."""
    marker = f"# SITE {tag}".rstrip()
    lines = (FIXTURES / script).read_text().splitlines()
    found = [n for n, line in enumerate(lines, 1) if line.rstrip().endswith(marker)]
    assert len(found) == 1, f"{script}: expected one {marker!r} line, found {found}"
    return f"{script}:{found[0]}"


def test_every_contract_code_has_a_trigger_and_a_twin() -> None:
    assert {t.code for t in TRIGGERS.values()} == set(SEVERITY)
    assert set(TWINS.values()) == set(SEVERITY)
    on_disk = {p.name for p in FIXTURES.glob("*.py")}
    assert on_disk == set(ALL_SCRIPTS), on_disk ^ set(ALL_SCRIPTS)


@pytest.mark.parametrize("script", list(TRIGGERS))
def test_trigger_reports_its_code(runs: Runs, script: str) -> None:
    expected = TRIGGERS[script]
    run = result(runs, script, expected.status)
    found = run.findings(expected.code)
    assert len(found) == 1, f"{script}: {expected.code} not reported; got {sorted(run.codes())}\n{run.output}"
    finding = found[0]
    assert finding["severity"] == SEVERITY[expected.code]
    assert finding["site"] == site_of(script)
    unexpected = run.codes() - {expected.code} - expected.also
    assert not unexpected, f"{script}: also reported {sorted(unexpected)}: {run.findings()}"
    # The per-step record agrees with the aggregated finding.
    steps = [c["step"] for c in run.report["calls"] if expected.code in c["codes"]]  # type: ignore[index]
    assert steps and steps[0] == finding["first_step"] and steps[-1] == finding["last_step"]
    assert len(steps) == finding["count"]


@pytest.mark.parametrize("script", list(TWINS))
def test_healthy_twin_is_quiet(runs: Runs, script: str) -> None:
    run = result(runs, script)
    code = TWINS[script]
    assert code not in run.codes(), f"{script}: {run.findings(code)}"
    assert not run.loud(), f"{script}: {run.loud()}"


@pytest.mark.parametrize("script", list(QUIET))
def test_legitimate_situation_is_quiet(runs: Runs, script: str) -> None:
    run = result(runs, script)
    assert not run.loud(), f"{script}: {run.loud()}"
    assert run.codes() <= QUIET[script], f"{script}: {run.findings()}"


# -- what each finding says, and when -------------------------------------------------------


def test_same_object_is_the_first_batch_only(runs: Runs) -> None:
    run = result(runs, "same-object.py")
    (finding,) = run.findings("same-object")
    assert (finding["first_step"], finding["last_step"], finding["count"]) == (0, 0, 1)
    assert finding["message"] == "vector1 and vector2 are the same tensor object"


def test_identical_only_at_step_0_is_reported_once_and_nothing_persists(runs: Runs) -> None:
    run = result(runs, STEP0_ONLY)
    (finding,) = run.findings("same-object")
    assert (finding["first_step"], finding["count"]) == (0, 1)
    assert finding["site"] == site_of(STEP0_ONLY)
    assert not run.codes() & {"collapse", "saturated", "constant-similarity", "stale-partner"}
    assert [f["code"] for f in run.loud()] == ["same-object"]
    assert run.report["steps"] == 8  # type: ignore[index]


def test_stale_partner_same_memory_names_the_earlier_step(runs: Runs) -> None:
    run = result(runs, "stale-partner.py")
    (finding,) = run.findings("stale-partner")
    # Step 0's partner was computed fresh; from step 1 on it is the previous step's anchor.
    assert (finding["first_step"], finding["last_step"], finding["count"]) == (1, 3, 3)
    assert finding["message"] == "vector2 is step 0's vector1 (same memory, detached)"
    assert re.fullmatch(r"vector2 is step \d+'s vector1 \(same memory, detached\)", finding["message"])


def test_stale_partner_copy_names_the_earlier_step(runs: Runs) -> None:
    run = result(runs, "stale-partner_clone.py")
    (finding,) = run.findings("stale-partner")
    assert (finding["first_step"], finding["last_step"], finding["count"]) == (1, 3, 3)
    assert finding["message"] == "partner is step 0's anchor (equal values, a copy)"


def test_stale_partner_with_its_graph_explains_the_crash(runs: Runs) -> None:
    run = result(runs, "stale-partner_attached.py", "error")
    assert run.report["exception"].startswith("RuntimeError: Trying to backward through the graph a second time")  # type: ignore[index]
    (finding,) = run.findings("stale-partner")
    assert (finding["first_step"], finding["count"]) == (1, 1)
    assert finding["message"] == "vector2 is step 0's vector1 (same memory)"


def test_shared_storage_says_which_is_detached(runs: Runs) -> None:
    (finding,) = result(runs, "shared-storage.py").findings("shared-storage")
    assert "vector1" in finding["message"] and "vector2" in finding["message"]
    assert "detached" in finding["message"]
    (view,) = result(runs, "shared-storage_view.py").findings("shared-storage")
    assert "detached" not in view["message"]


def test_self_similarity_matrix_is_not_shared_storage(runs: Runs) -> None:
    run = result(runs, "quiet_self_similarity_matrix.py")
    assert "shared-storage" not in run.codes()
    (finding,) = run.findings("broadcast")
    assert finding["severity"] == "info"
    assert "z[:, None]" in finding["message"] and "z[None, :]" in finding["message"]


def test_detached_partner_names_both_sides(runs: Runs) -> None:
    (finding,) = result(runs, "detached-partner.py").findings("detached-partner")
    assert finding["message"].startswith("p1 carries autograd history, z2.detach() does not")
    (simsiam,) = result(runs, "quiet_simsiam.py").findings("detached-partner")
    assert simsiam["severity"] == "info"


def test_persistent_codes_wait_for_persistence(runs: Runs) -> None:
    # collapse and saturated need 3 consecutive steps (steps 0, 1, 2: first reported at step 2);
    # constant-similarity needs 5 (steps 0..4).
    assert result(runs, "collapse.py").findings("collapse")[0]["first_step"] == 2
    # Across steps, the first score needs 4 rows (steps 0 and 1), so it persists from step 1 to 3.
    assert result(runs, "collapse_across-steps.py").findings("collapse")[0]["first_step"] == 3
    assert "across recent steps" in result(runs, "collapse_across-steps.py").findings("collapse")[0]["message"]
    assert "within the batch" in result(runs, "collapse.py").findings("collapse")[0]["message"]
    assert result(runs, "saturated.py").findings("saturated")[0]["first_step"] == 2
    assert result(runs, "constant-similarity.py").findings("constant-similarity")[0]["first_step"] == 4


def test_zero_norm_is_one_finding_per_step_naming_both(runs: Runs) -> None:
    run = result(runs, "zero-norm.py")
    (finding,) = run.findings("zero-norm")
    assert finding["count"] == run.report["steps"] == 3  # type: ignore[index]
    assert "vector1" in finding["message"] and "vector2" in finding["message"]
    # Two all-zero tensors are equal, and all-zero rows point nowhere: zero-norm explains both.
    assert not run.codes() & {"identical-values", "collapse"}


def test_precision_loss_names_the_dtypes(runs: Runs) -> None:
    (finding,) = result(runs, "precision-loss.py").findings("precision-loss")
    assert "(float32, float32)" in finding["message"]


# -- the real check, on a few of them -------------------------------------------------------

THROUGH_CHECK = ["same-object.py", "stale-partner_attached.py", "quiet_random_embeddings.py"]
"""A finding (exit 1), a finding in a script that failed (still 1), and nothing at all (0)."""


def _check(script: str, out_dir: Path) -> CheckRun:
    report_path = out_dir / (script.removesuffix(".py") + ".json")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cossim_tui", "check", "--json", str(report_path), "--fail-on", "info", script],
            cwd=FIXTURES, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        return CheckRun(script, -1, None, f"timed out after {RUN_TIMEOUT} s\n{exc.stdout or ''}{exc.stderr or ''}")
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return CheckRun(script, done.returncode, report, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CheckRun]:
    """``THROUGH_CHECK`` run by ``cossim-tui check``, side by side (each child imports torch)."""
    from concurrent.futures import ThreadPoolExecutor

    out_dir = tmp_path_factory.mktemp("diagnostics-reports")
    with ThreadPoolExecutor(max_workers=len(THROUGH_CHECK)) as pool:
        return dict(zip(THROUGH_CHECK, pool.map(lambda script: _check(script, out_dir), THROUGH_CHECK)))


@pytest.mark.parametrize("script", THROUGH_CHECK)
def test_check_reports_and_exits_as_the_matrix_found(checked: dict[str, CheckRun], runs: Runs, script: str) -> None:
    run = checked[script]
    assert run.report is not None, f"{script}: check wrote no report (exit {run.returncode})\n{run.output}"
    in_process = runs[script]
    assert run.returncode == in_process.returncode, run.output
    assert run.report == in_process.report
    # The summary on stdout names each finding, its site and the exit status.
    for finding in run.report["findings"]:
        assert f"{finding['code']:<20} {finding['site']}" in run.output
    assert run.output.rstrip().endswith(f"exit status {run.returncode}")
