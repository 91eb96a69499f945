"""Every demo shows the bug it is named after, and its fixed twin shows no error or warning:
the README's demo table stays true.

Each demo runs as under ``cossim-tui check --fail-on info --json REPORT demo/DEMO`` from the
repository, in this process (``agent_harness.run_script``: the same agent, report and exit
status, without a child that imports torch); the README's own example, ``check
demo/half_precision.py`` failing CI, goes through the real command too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_harness import run_script

# Its module-scoped fixtures run once for several tests: all of them on one worker (pyproject).
pytestmark = pytest.mark.xdist_group("test_demos")

REPO = Path(__file__).resolve().parents[2]

# demo -> (codes it must report, codes it may also report)
BUGS = {
    "siamese_stale_partner.py": ({"same-object", "stale-partner", "collapse"}, {"detached-partner", "saturated"}),
    "collapse.py": ({"collapse"}, {"common-mode", "saturated"}),
    "relu_embeddings.py": ({"nonnegative-features"}, {"common-mode"}),
    "wrong_dim.py": ({"degenerate-dim"}, set()),
    "half_precision.py": ({"precision-loss"}, set()),
}
# fixed demo -> info codes it may report (never an error or warning)
FIXES = {
    "siamese_fixed.py": set(),
    "collapse_fixed.py": {"broadcast"},
    "relu_embeddings_fixed.py": set(),
    "wrong_dim_fixed.py": set(),
    "half_precision_fixed.py": set(),
}


def _check(demo: str, tmp: Path) -> tuple[int, dict]:
    report = tmp / f"{demo}.json"
    done = subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", "--fail-on", "info", "--json", str(report), f"demo/{demo}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    return done.returncode, json.loads(report.read_text())


class Reports:
    """Each demo's exit status and report, run once, when a test first asks for it."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[int, dict]] = {}

    def __getitem__(self, demo: str) -> tuple[int, dict]:
        if demo not in self._done:
            # As the command below runs: torch with its default threads.
            run = run_script(REPO / "demo" / demo, cwd=REPO, fail_on="info", threads=None)
            self._done[demo] = (run.returncode, run.report)
        return self._done[demo]


@pytest.fixture(scope="module")
def reports() -> Reports:
    return Reports()


def test_half_precision_s_wrong_answer_is_an_error(reports) -> None:
    """Off by up to 0.998 (rows read 0 where float64 says about 0.99): CONTRACT makes that an
    error, so that ``cossim-tui check demo/half_precision.py`` fails CI."""
    _, report = reports["half_precision.py"]
    (finding,) = [f for f in report["findings"] if f["code"] == "precision-loss"]
    assert finding["severity"] == "error", finding


@pytest.mark.parametrize("demo", list(BUGS))
def test_the_bug_demo_reports_its_code(reports, demo: str) -> None:
    status, report = reports[demo]
    required, allowed = BUGS[demo]
    codes = {f["code"] for f in report["findings"]}
    assert report["status"] == "finished" and status == 1
    assert required <= codes, report["findings"]
    assert codes <= required | allowed, report["findings"]


@pytest.mark.parametrize("demo", list(FIXES))
def test_the_fixed_demo_is_clean(reports, demo: str) -> None:
    _, report = reports[demo]
    assert report["status"] == "finished"
    codes = {f["code"] for f in report["findings"]}
    assert codes <= FIXES[demo], report["findings"]


def _similarities(report: dict) -> list[float]:
    return [call["cos"]["mean"] for call in report["calls"]]


def test_the_articles_loop_is_pinned_at_one_and_its_fix_spreads(reports) -> None:
    """The README's pictures: the article's loop sits at 1 from the first step to the last,
    the corrected loop moves over a wide range."""
    stuck = _similarities(reports["siamese_stale_partner.py"][1])
    moving = _similarities(reports["siamese_fixed.py"][1])
    assert len(stuck) == len(moving) == 80
    assert min(stuck) > 0.99, stuck
    assert min(moving) < 0.5 < 0.8 < max(moving), moving


def test_check_fails_ci_on_the_half_precision_demo_as_in_process(reports, tmp_path) -> None:
    """The real command: exit status 1, and the report the in-process run made."""
    status, report = _check("half_precision.py", tmp_path)
    assert (status, report) == reports["half_precision.py"]
    assert status == 1
