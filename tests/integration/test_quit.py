"""Quitting: ``Run.terminate()`` ends the script and everything it started, promptly.

Whether anything survives is checked in ``/proc``: no live process may remain in the
child's process group (the child leads its own group, so its id is the child's pid).
"""

from __future__ import annotations

import time

from cossim_tui import protocol
from cossim_tui.protocol import AgentConfig
from integration.live import FIXTURES, group_members, wait_group_gone

LIMIT = 2.0


def _terminate_and_check(live) -> None:
    pid = live.pid
    started = time.monotonic()
    live.run.terminate()
    took = time.monotonic() - started
    assert live.run.process.poll() is not None, "the script is still running"
    assert took < LIMIT, f"terminate() took {took:.2f} s"
    survivors = wait_group_gone(pid, timeout=LIMIT - took)
    assert survivors == [], f"still alive in the script's process group: {survivors}"
    exited = live.wait_exit(timeout=10)
    # Ended by the user, not by a signal of its own: the trace replays it as "quit by the user".
    assert exited.status == "quit" and exited.description == "quit by the user"


def test_quit_while_paused(start_run):
    live = start_run(FIXTURES / "cosine_loop.py", "--count", "3", config=AgentConfig(mode="step"))
    assert live.next_step().paused
    _terminate_and_check(live)


def test_quit_while_running_freely(start_run):
    live = start_run(FIXTURES / "sleep_loop.py", "60")
    live.wait_output("heartbeat 2\n")
    _terminate_and_check(live)


def test_quit_while_dataloader_workers_are_alive(start_run):
    live = start_run(FIXTURES / "dataloader_workers.py", "--batches", "3", "--hold", "60")
    live.wait_output("workers alive\n")
    assert len(group_members(live.pid)) >= 3, "expected the script and its two workers"
    _terminate_and_check(live)


def test_a_script_that_failed_on_its_own_stays_failed_when_its_lingering_process_is_ended(start_run):
    """A non-daemon thread keeps the process alive after the script raised: ending it then is
    not what made the run fail, and the trace must not replay it as a quit."""
    live = start_run(FIXTURES / "raise_and_linger.py")
    # The agent's word on the script's end has been read: the run's events yield it as they read it.
    while not any(isinstance(event, protocol.ScriptEnded) for event in live.events):
        live.next_event(timeout=10)
    live.run.terminate()
    exited = live.wait_exit(timeout=10)
    assert (exited.status, exited.exception) == ("error", "ValueError: boom")
    assert exited.description == "failed: ValueError: boom"


def test_quitting_a_script_that_handles_sigterm_itself_is_still_a_quit(start_run):
    live = start_run(FIXTURES / "sigterm_handler.py")
    live.wait_output("ready\n")
    live.run.terminate()
    exited = live.wait_exit(timeout=10)
    assert exited.status == "quit" and not exited.failed
