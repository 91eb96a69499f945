"""A two-rank torchrun job in a real terminal: both ranks pause, step together, are shown in
turn, and `q` ends every rank, their DataLoader workers and torchrun, with nothing left."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from tmux_terminal import Terminal, processes_run_from

from waiting import until

# One at a time, on one worker (pyproject).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tmux")]


@pytest.fixture
def job_terminal():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    tag = uuid.uuid4().hex
    path = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    job = "torchrun --standalone --nproc-per-node 2 tests/fixtures/ddp_pairs.py --steps 6 --workers 2"
    terminal = Terminal(f"{path}python -m cossim_tui {job} --tag {tag}", width=120, height=40)
    try:
        yield terminal, tag
    finally:
        terminal.close()


def test_two_ranks_step_switch_and_quit_with_nothing_left(job_terminal) -> None:
    terminal, tag = job_terminal
    terminal.wait_for("1 paused at step 0", timeout=120)
    terminal.wait_for("▸0 paused at step 0")  # rank 0 is shown first, whichever rank said hello first
    assert "k Rank" in terminal.screen()
    terminal.press("n")
    terminal.wait_for("1 paused at step 1")
    terminal.wait_for("▸0 paused at step 1")
    terminal.press("k")
    terminal.wait_for("▸1 paused at step 1")
    # Both ranks, their DataLoader workers (2 each) and torchrun are running now.
    assert len(processes_run_from(tag)) >= 3
    terminal.press("q")
    terminal.wait_for("cossim-tui-exited=0")
    until(lambda: not processes_run_from(tag), 20, lambda: f"no process of the job left: {processes_run_from(tag)}")
