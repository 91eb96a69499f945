"""Custom pairs: ``--watch MODULE:FUNCTION`` and ``cossim_tui.probe(a, b)`` are steps like any
other, and neither changes what the script computes. A method's pair is its first two arguments
after ``self``; the result is read as the cosine only with ``=similarity``; a target that never
loads, or is not there, is said once in the script's output.

Here through the real command (and plain python, for ``probe`` left in a script); the rest runs
in this process, in ``tests/agent/test_watch_probe.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from watch_project import write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


def _check(project: Path, *options: str, script: str = "train.py") -> tuple[subprocess.CompletedProcess, dict]:
    report = project / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", "--json", str(report), "--fail-on", "never", *options, script],
        cwd=project, capture_output=True, text=True, timeout=120,
    )
    return done, json.loads(report.read_text())


def test_watched_functions_and_probes_are_steps(project: Path) -> None:
    done, report = _check(project, "--watch", "mypkg.losses:cos_sim=similarity", "--watch", "mypkg.losses:Head.score")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = report["calls"]
    assert [c["function"] for c in calls] == ["watch mypkg.losses:cos_sim", "watch mypkg.losses:Head.score", "probe"]
    assert [[a["expr"] for a in c["args"]] for c in calls] == [
        ["z", "z.detach()"],
        ["z", "torch.ones(4, 8)"],
        ["z", "z + 1"],
    ]
    assert [c["site"] for c in calls] == ["train.py:8", "train.py:9", "train.py:10"]
    assert "shared-storage" in calls[0]["codes"]
    assert abs(calls[0]["cos"]["mean"] - 1.0) < 1e-6


def test_watch_needs_module_and_function(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", "--watch", "cos_sim", "train.py"],
        cwd=project, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "MODULE:FUNCTION" in done.stderr


def test_probe_without_cossim_tui_does_nothing() -> None:
    """Left in a script run with plain python: no import of torch, no output, no result."""
    code = "import sys, cossim_tui; r = cossim_tui.probe(1, 2, label='x'); print(r, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "None False"
