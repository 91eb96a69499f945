"""Sends the agent's messages without ever making the script wait for the screen.

A message is written straight to the channel when the socket's buffer can take it, which is
what happens while the reader keeps up: the step is then in the kernel, and survives the
script being killed the next instant. When the buffer is full (a TUI busy drawing), what is
left goes to a queue that a thread of its own writes out, and the script goes on. The queue is
bounded (``LIMIT`` messages): only a reader that far behind makes the script wait. Whoever is
about to end the process ``flush``es first, so that the last steps and the script's end are
not lost.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from cossim_tui import protocol

LIMIT = 4096


class Outbox:
    def __init__(self, connection: protocol.Connection, on_broken: Callable[[], None]) -> None:
        self._connection = connection
        self._on_broken = on_broken
        self._queue: deque[protocol.Message | bytes] = deque()
        """Messages not written yet, in order; bytes are the rest of a frame half written."""
        self._changed = threading.Condition()
        self._writing = False
        """Someone (the caller, or the thread) is writing to the channel: others wait their turn."""
        self._flushing = 0
        """Callers waiting in ``flush``."""
        self._broken = False
        self._thread: threading.Thread | None = None

    def put(self, message: protocol.Message) -> None:
        with self._changed:
            while len(self._queue) >= LIMIT and not self._broken:
                self._changed.wait()
            if self._broken:
                return
            if self._queue or self._writing:
                self._enqueue(message)
                return
            self._writing = True
        rest: bytes | None = None
        try:
            data = protocol.encode(message)
            written = self._connection.send_now(data)
            rest = data[written:] if written < len(data) else None
        except OSError:
            self._break()
            return
        except Exception as exc:  # noqa: BLE001 - this one message cannot travel; say so, go on
            print(f"cossim-tui: a {message.kind} message was not sent: {type(exc).__name__}: {exc}", file=sys.stderr)
        with self._changed:
            self._writing = False
            if rest is not None:
                self._queue.appendleft(rest)  # before anything queued meanwhile
                self._start()
            if self._queue or self._flushing:
                # Only then is anyone waiting for this write to end: the thread, once it
                # exists, waits for a queue; waking it for every message sent straight
                # would hand it the GIL for nothing.
                self._changed.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything put so far has been written (or the channel broke)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._flushing += 1
            try:
                while (self._queue or self._writing) and not self._broken:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(remaining)
            finally:
                self._flushing -= 1

    def _enqueue(self, message: protocol.Message) -> None:
        self._queue.append(message)
        self._start()
        self._changed.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cossim-tui-outbox", daemon=True)
            self._thread.start()

    def _break(self) -> None:
        with self._changed:
            self._broken, self._writing = True, False
            self._queue.clear()
            self._changed.notify_all()
        self._on_broken()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue or self._writing:
                    self._changed.wait()
                item = self._queue.popleft()
                self._writing = True
                self._changed.notify_all()
            try:
                self._connection.send_bytes(item if isinstance(item, bytes) else protocol.encode(item))
            except OSError:
                self._break()
                return
            except Exception as exc:  # noqa: BLE001 - as in put(): never let the thread die silently
                print(f"cossim-tui: a {getattr(item, 'kind', '?')} message was not sent: {type(exc).__name__}: {exc}", file=sys.stderr)
            with self._changed:
                self._writing = False
                self._changed.notify_all()
