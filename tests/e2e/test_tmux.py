"""The installed ``cossim-tui`` in a real terminal, driven as a person would: open the demo,
read the paused step, press keys, quit, and find nothing left running."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
from tmux_terminal import REPO, Terminal, processes_run_from

from waiting import until

# One at a time, on one worker (pyproject): each runs the demo, and they time a step.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tmux")]

DEMO = REPO / "demo" / "siamese_stale_partner.py"


@pytest.fixture
def terminal(tmp_path: Path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    command = shutil.which("cossim-tui")
    assert command is not None, "the cossim-tui command is not installed (pip install -e .)"
    script = tmp_path / f"demo_{uuid.uuid4().hex[:8]}.py"
    shutil.copy(DEMO, script)
    terminal = Terminal(f"{command} {script} --images 8 --epochs 1")
    try:
        yield terminal, script
    finally:
        terminal.close()


def test_demo_pauses_steps_and_quits_cleanly(terminal) -> None:
    term, script = terminal

    screen = term.wait_for("paused at step 0")
    assert "vector1_tensor" in screen and "vector2_tensor" in screen
    same_object = next(line for line in screen.splitlines() if "same object" in line)
    assert "YES" in same_object
    agents = processes_run_from(script.name)
    assert agents, "the script's process should be alive while paused"

    pressed = time.monotonic()
    term.press("n")
    screen = term.wait_for("paused at step 1", timeout=10)
    step_latency = time.monotonic() - pressed
    # The header and the panels are separate widgets: wait for the frame that has them all.
    screen = term.wait_for("stale-partner", timeout=10)
    assert "detached" in screen, "the recycled partner is shown as detached"
    print(f"step latency through tmux: {step_latency * 1000:.0f} ms")

    term.press("q")
    screen = term.wait_for("cossim-tui-exited=0", timeout=10)
    until(
        lambda: not processes_run_from(script.name), 2,
        lambda: f"every process to end; left behind after quitting: {processes_run_from(script.name)}",
    )


def test_closing_the_terminal_ends_the_script(terminal) -> None:
    """SIGHUP from a closed terminal: the script and its process group end with the TUI."""
    term, script = terminal
    term.wait_for("paused at step 0")
    assert processes_run_from(script.name)
    term.hang_up()
    until(lambda: not processes_run_from(script.name), 3, lambda: f"every process to end: {processes_run_from(script.name)}")
