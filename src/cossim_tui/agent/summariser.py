"""Calls summarised behind the script: one thread, in order, a bounded number in flight.

Where the script runs freely and a small pair lives on a device whose copies run behind the
queued work (CUDA), waiting for its values at the call is what costs: the controller starts
the call's transfer and hands the call here, and the thread makes and sends its step once
the values have arrived.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from cossim_tui.agent import intercept
from cossim_tui.agent.call import Call

IN_FLIGHT = 8
"""Calls that may wait for the summariser before the script waits for it in turn."""



class Summariser:
    """A thread that finishes calls started on their way to the host (``_send_behind``), one
    at a time and in order: it waits for each one's values (without the GIL), then summarises
    it, mostly while the script's thread is inside torch (a backward pass, kernel launches).

    Only it touches the evidence, the judge and the encoder while it has calls; the script's
    thread touches them only after ``drain``, under the controller's lock, which the thread
    never takes. At most ``IN_FLIGHT`` calls wait: past that, ``put`` waits for the thread.
    """

    def __init__(self, finish: Callable[[Call], None]) -> None:
        self._finish = finish
        self._calls: collections.deque[Call] = collections.deque()
        self._changed = threading.Condition()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="cossim-tui-summariser", daemon=True)
        self._thread.start()

    def put(self, call: Call) -> None:
        with self._changed:
            while len(self._calls) >= IN_FLIGHT:
                self._changed.wait()
            self._calls.append(call)
            self._changed.notify_all()

    def drain(self) -> None:
        """Wait until every call put here has been finished."""
        with self._changed:
            while self._calls or self._busy:
                self._changed.wait()

    def _run(self) -> None:
        intercept.agent_thread()
        while True:
            with self._changed:
                while not self._calls:
                    self._changed.wait()
                call = self._calls.popleft()
                self._busy = True
                self._changed.notify_all()
            try:
                self._finish(call)  # never raises: a failure is reported as the call's step
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
