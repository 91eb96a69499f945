"""Fixtures for the integration tests: every run a test starts is ended at teardown."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from cossim_tui.launcher import Run
from cossim_tui.session.events import Target
from cossim_tui.protocol import AgentConfig
from integration.live import LiveRun, run_check


@pytest.fixture
def start_run() -> Iterator[Any]:
    """``start_run(script_or_target, *args, config=..., cwd=...)`` -> ``LiveRun``; ended at teardown."""
    started: list[LiveRun] = []

    def start(
        target: str | os.PathLike | Target,
        *args: str,
        config: AgentConfig | None = None,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
    ) -> LiveRun:
        if not isinstance(target, Target):
            target = Target(script=str(target), args=list(args))
        run = Run(target, config or AgentConfig(mode="run"), cwd=None if cwd is None else str(cwd), env=env)
        live = LiveRun(run)
        started.append(live)
        return live

    yield start
    for live in started:
        live.run.terminate()


@pytest.fixture(scope="session")
def same_object_checked(tmp_path_factory) -> tuple[Any, Any]:
    """``check --json REPORT tests/fixtures/same_object.py``: its result and REPORT's path. The
    same command serves ``test_check`` and ``test_record_replay`` (the run without ``--record``),
    whose tests that read it share the ``recorded-check`` xdist group, so that it runs once."""
    report = tmp_path_factory.mktemp("same_object") / "r.json"
    return run_check("--json", str(report), "tests/fixtures/same_object.py"), report
