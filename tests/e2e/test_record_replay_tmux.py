"""The installed ``cossim-tui`` in a real terminal: record a session with ``--record``, quit,
then open the trace with ``cossim-tui replay`` and see the same step and how the run ended."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from cossim_tui.session.replay import read_trace
from waiting import until

# One tmux server for all of them (pyproject): one at a time, on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tmux")]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "tests/fixtures/cosine_loop.py"


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


class Terminal:
    """One tmux session running ``shell``; ended at teardown whatever the test did."""

    def __init__(self, shell: str) -> None:
        self.session = f"cossim-e2e-{uuid.uuid4().hex[:8]}"
        # The terminal decides the size; COLUMNS/LINES inherited from a test runner would override it.
        command = f"unset COLUMNS LINES; cd {REPO} && {shell}; echo cossim-tui-exited=$?; sleep 600"
        _tmux("new-session", "-d", "-s", self.session, "-x", "110", "-y", "34", "bash", "-c", command)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        screens = [""]

        def shown() -> str:
            screens[0] = _tmux("capture-pane", "-p", "-t", self.session)
            return screens[0] if text in screens[0] else ""

        return until(shown, timeout, lambda: f"{text!r} on screen; last screen:\n{screens[0]}")

    def press(self, key: str) -> None:
        _tmux("send-keys", "-t", self.session, key)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


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
