"""The installed ``cossim-tui`` in a real terminal, driven as a person would: open the demo,
read the paused step, press keys, quit, and find nothing left running."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from waiting import until

# One tmux server for all of them (pyproject): one at a time, on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tmux")]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "siamese_stale_partner.py"


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def _processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """cossim-tui's own processes and the script's (not tmux, not the shell that started them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ours = "cossim_tui.agent" in cmdline or "bin/cossim-tui" in cmdline
        if marker in cmdline and ours and not cmdline.startswith(("tmux", "bash")):
            found.append((int(entry.name), cmdline))
    return found


class Terminal:
    def __init__(self, session: str) -> None:
        self.session = session

    def screen(self) -> str:
        return _tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        screens = [""]

        def shown() -> str:
            screens[0] = self.screen()
            return screens[0] if text in screens[0] else ""

        return until(shown, timeout, lambda: f"{text!r} on screen; last screen:\n{screens[0]}")

    def press(self, key: str) -> None:
        _tmux("send-keys", "-t", self.session, key)


@pytest.fixture
def terminal(tmp_path: Path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    command = shutil.which("cossim-tui")
    assert command is not None, "the cossim-tui command is not installed (pip install -e .)"
    script = tmp_path / f"demo_{uuid.uuid4().hex[:8]}.py"
    shutil.copy(DEMO, script)
    session = f"cossim-e2e-{uuid.uuid4().hex[:8]}"
    # The terminal decides the size; COLUMNS/LINES inherited from a test runner would override it.
    shell = f"unset COLUMNS LINES; cd {REPO} && {command} {script} --images 8 --epochs 1; echo cossim-tui-exited=$?; sleep 600"
    _tmux("new-session", "-d", "-s", session, "-x", "110", "-y", "34", "bash", "-c", shell)
    try:
        yield Terminal(session), script
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_demo_pauses_steps_and_quits_cleanly(terminal) -> None:
    term, script = terminal

    screen = term.wait_for("paused at step 0")
    assert "vector1_tensor" in screen and "vector2_tensor" in screen
    same_object = next(line for line in screen.splitlines() if "same object" in line)
    assert "YES" in same_object
    agents = _processes_mentioning(script.name)
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
        lambda: not _processes_mentioning(script.name), 2,
        lambda: f"every process to end; left behind after quitting: {_processes_mentioning(script.name)}",
    )


def test_closing_the_terminal_ends_the_script(terminal) -> None:
    """SIGHUP from a closed terminal: the script and its process group end with the TUI."""
    term, script = terminal
    term.wait_for("paused at step 0")
    assert _processes_mentioning(script.name)
    _tmux("kill-session", "-t", term.session)
    until(lambda: not _processes_mentioning(script.name), 3, lambda: f"every process to end: {_processes_mentioning(script.name)}")
