"""The installed ``cossim-tui`` in a real terminal: record a session with ``--record``, quit,
then open the trace with ``cossim-tui replay`` and see the same step and how the run ended."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tmux_terminal import Terminal

from cossim_tui.session.replay import read_trace

# One at a time, on one worker (pyproject).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tmux")]

SCRIPT = "tests/fixtures/cosine_loop.py"


@pytest.fixture
def cossim_tui():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    command = shutil.which("cossim-tui")
    assert command is not None, "the cossim-tui command is not installed (pip install -e .)"
    opened: list[Terminal] = []

    def start(args: str) -> Terminal:
        terminal = Terminal(f"{command} {args}")
        opened.append(terminal)
        return terminal

    yield start
    for terminal in opened:
        terminal.close()


def test_record_a_session_then_replay_it(cossim_tui, tmp_path: Path) -> None:
    trace = tmp_path / "session.jsonl"

    live = cossim_tui(f"--record {trace} {SCRIPT} --count 5")
    live.wait_for("paused at step 0")
    live.press("n")
    live.wait_for("paused at step 1", timeout=10)
    live.press("q")
    live.wait_for("cossim-tui-exited=0", timeout=10)

    recorded = read_trace(trace)
    assert [s.step for s in recorded.steps] == [0, 1]
    assert recorded.header.versions.get("textual")
    assert recorded.exited.status == "quit"  # quitting ends the script, and says so

    replay = cossim_tui(f"replay {trace}")
    screen = replay.wait_for("quit by the user")
    assert "2 steps" in screen and "(replay of" in screen  # the file name may be cut at the right edge
    assert "step 1 · cosine_similarity" in screen
    assert "anchor" in screen and "positive" in screen
    replay.press("q")
    replay.wait_for("cossim-tui-exited=0", timeout=10)
