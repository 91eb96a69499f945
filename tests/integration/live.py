"""Helpers for driving a real child process: a run whose events can be awaited with a timeout.

``launcher.Run.events()`` blocks until the next event, so a test that waits for one reads
them from a background thread into a queue, with a timeout. Every run a test starts is ended by ``Run.terminate()`` at teardown,
whatever the test did; nothing is ever killed by name.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cossim_tui import protocol
from cossim_tui.launcher import Run
from cossim_tui.session.events import OutputReceived, ScriptExited
from waiting import until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPO = FIXTURES.parent.parent

# A child imports torch (about 1.5 s, more on a loaded machine): waits are generous.
START_TIMEOUT = 60.0


class Timeout(AssertionError):
    pass


class LiveRun:
    """A ``Run`` whose events a reader thread puts in a queue, so tests can wait with a timeout."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.events: list[Any] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="test-run-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for event in self.run.events():
                self._queue.put(event)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test as an event
            self._queue.put(exc)

    # -- waiting ------------------------------------------------------------------------

    def next_event(self, timeout: float = START_TIMEOUT) -> Any:
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"no event within {timeout} s") from None
        if isinstance(event, BaseException):
            raise event
        self.events.append(event)
        return event

    def next_step(self, timeout: float = START_TIMEOUT) -> protocol.StepCaptured:
        """The next ``StepCaptured``; fails if the script ends first."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, protocol.StepCaptured):
                return event
            if isinstance(event, ScriptExited):
                raise AssertionError(f"the script ended ({event}) before the next step; output:\n{self.output}")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> ScriptExited:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, ScriptExited):
                self._reader.join(timeout=5)
                return event

    def wait_output(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``text`` has appeared in the script's output."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, ScriptExited):
                raise AssertionError(f"the script ended before printing {text!r}; output:\n{self.output}")

    # -- what arrived so far ------------------------------------------------------------

    @property
    def output(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, OutputReceived))

    @property
    def steps(self) -> list[protocol.StepCaptured]:
        return [e for e in self.events if isinstance(e, protocol.StepCaptured)]

    def send(self, message: protocol.Message) -> None:
        self.run.send(message)

    @property
    def pid(self) -> int:
        return self.run.pid



def run_plain(
    command_args: list[str],
    cwd: str | os.PathLike | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """The script under plain ``python`` (stdin /dev/null, as the agent gives it)."""
    return subprocess.run(
        [sys.executable, *command_args],
        cwd=None if cwd is None else str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def run_check(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m cossim_tui check ARGS`` as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "cossim_tui", "check", *args],
        cwd=str(cwd or REPO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes whose process group id is ``pgid``, as ``pid comm state``.

    A zombie has already ended; whether it lingers depends on who reaps orphans here (the
    container's pid 1 may never do it), not on cossim-tui.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        comm_end = stat.rfind(")")
        fields = stat[comm_end + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            found.append(f"{entry} {stat[stat.find('(') + 1 : comm_end]} {state}")
    return found


def wait_group_gone(pgid: int, timeout: float) -> list[str]:
    """Poll until no live process of group ``pgid`` remains; the survivors if some do."""
    try:
        until(lambda: not group_members(pgid), timeout, f"process group {pgid} to end")
    except AssertionError:
        pass
    return group_members(pgid)
