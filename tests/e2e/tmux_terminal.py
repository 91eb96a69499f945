"""A real terminal for the end-to-end tests: a tmux session on a tmux server of its own.

Each terminal starts its own server (``tmux -S``, its socket in a directory of its own) and
ends it at ``close``, the directory too. On tmux's shared default server, a test that opened a
session just as the previous test's last session ended met that server on its way out ("server
exited unexpectedly"); and the tests would have run among the sessions of whoever runs them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from waiting import processes_mentioning, until

REPO = Path(__file__).resolve().parents[2]


class Terminal:
    """``command`` run by bash in the repository, in a ``width`` × ``height`` terminal; its exit
    status is then shown (``cossim-tui-exited=N``) and the terminal stays open until ``close``."""

    def __init__(self, command: str, width: int = 110, height: int = 34) -> None:
        self._home = tempfile.mkdtemp(prefix="cossim-e2e-")
        self.server = str(Path(self._home) / "tmux")
        self.session = "e2e"
        # The terminal decides the size; COLUMNS/LINES inherited from a test runner would override it.
        shell = f"unset COLUMNS LINES; cd {REPO} && {command}; echo cossim-tui-exited=$?; sleep 600"
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), "bash", "-c", shell)

    def tmux(self, *args: str) -> str:
        """A tmux command on this terminal's server."""
        return subprocess.run(["tmux", "-S", self.server, *args], capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        screens = [""]

        def shown() -> str:
            screens[0] = self.screen()
            return screens[0] if text in screens[0] else ""

        return until(shown, timeout, lambda: f"{text!r} on screen; last screen:\n{screens[0]}")

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", self.session, key)

    def hang_up(self) -> None:
        """Close the terminal under what runs in it (SIGHUP), as closing its window does."""
        self.tmux("kill-session", "-t", self.session)

    def close(self) -> None:
        """End the session, if it is still open, and the server."""
        subprocess.run(["tmux", "-S", self.server, "kill-server"], capture_output=True)
        shutil.rmtree(self._home, ignore_errors=True)


def processes_run_from(marker: str) -> list[str]:
    """The live processes whose command line names ``marker`` (a script's unique name, a job's
    tag), as ``pid command``: cossim-tui's, the script's and what they started, not tmux nor the
    shell that ran the command."""
    return [line for line in processes_mentioning(marker) if not line.split(" ", 1)[1].startswith(("tmux", "bash"))]
