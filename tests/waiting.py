"""Waiting for an event in a test: the one deadline-polling helper, and the events it waits on.

A test never sleeps for a fixed time and then asserts that something did *not* happen: it waits
for the event after which it could no longer happen (a thread parked on a lock, a child blocked
reading its channel, every process that could have done it gone), then asserts. ``until`` polls a
condition with a deadline and fails with a message saying what never came.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.02


def _polls(condition: Callable[[], T], timeout: float, what: str | Callable[[], str]) -> Generator[None, None, T]:
    """The one deadline-polling loop: yields while ``condition`` is false (the caller waits
    ``INTERVAL`` its own way), returns its value once true, fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        yield


def until(condition: Callable[[], T], timeout: float = 60.0, what: str | Callable[[], str] = "the condition") -> T:
    """Poll ``condition`` until it is true (its value is returned); fail after ``timeout`` s."""
    polls = _polls(condition, timeout, what)
    try:
        while True:
            next(polls)
            time.sleep(INTERVAL)
    except StopIteration as done:
        return done.value


async def until_async(
    pause: Callable[[float], Awaitable[object]],
    condition: Callable[[], T],
    timeout: float = 60.0,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """``until`` inside an event loop: ``pause`` (``Pilot.pause``) lets the app run meanwhile."""
    polls = _polls(condition, timeout, what)
    try:
        while True:
            next(polls)
            await pause(INTERVAL)
    except StopIteration as done:
        return done.value


def parked_in(thread: threading.Thread, function: str) -> bool:
    """``thread`` waits on a lock or condition inside a call of ``function``: it cannot go on
    until someone else wakes it."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def blocked_reading_a_socket(pid: int) -> bool:
    """The main thread of process ``pid`` is asleep in a read of a Unix socket (a child started
    early waits there for its settings). Linux's ``/proc``; where the kernel hides ``wchan``,
    the system call it sleeps in (``recvfrom``/``recvmsg``/``read``, x86-64 and arm64)."""
    try:
        with open(f"/proc/{pid}/wchan") as handle:
            wchan = handle.read().strip()
        with open(f"/proc/{pid}/syscall") as handle:
            call = handle.read().split()[0]
    except (OSError, IndexError):
        return False
    if wchan not in ("", "0"):
        return wchan.startswith("unix_stream_read")
    reads = {"x86_64": {"0", "45", "47"}, "aarch64": {"63", "207", "212"}}.get(os.uname().machine, set())
    return call in reads


def processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line contains ``text``, as ``pid command``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in command and state not in ("Z", "X"):
            found.append(f"{entry} {command.strip()}")
    return found
