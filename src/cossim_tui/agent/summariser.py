"""Calls summarised behind the script: one thread, in order, a bounded number unsent.

Where the script runs freely, waiting for a call's figures at the call is what costs: on a
device whose copies run behind the queued work (CUDA), the wait for the values; on the CPU,
the few dozen tiny ops of one small pair, which cost far less made once for many calls
(``batch``). The controller starts such a call (its transfer begun, or its values copied) and
hands it here; the thread makes and sends its step once the values have arrived, in order.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from cossim_tui.agent import intercept
from cossim_tui.agent.call import Call

IN_FLIGHT = 8
"""Calls on their way from a device that may wait for the summariser before the script waits
for it in turn."""

PARKED = 64
"""Calls whose steps may be unsent at once: a script killed (SIGKILL) loses at most these."""

AT_ONCE_FIRST = 64
"""The first calls of a run are summarised at the call even where they could be parked: a short
run, or one killed early, loses none of its steps."""

GATHER = PARKED
"""Parked calls the thread waits for before it summarises them together (or ``LINGER``). As
many as may be unsent: the larger the batch, the fewer times its ops are dispatched (figure 3,
(8, 64): 227–234 µs added a call at 64, 246–252 µs at 32, alternately, under load 3)."""

LINGER = 0.05
"""Seconds a parked call may wait for others, so that a slow loop's steps still come promptly."""


class Summariser:
    """Finishes calls started on their way (``_send_behind``), one batch at a time and in order:
    it takes the calls waiting, lets ``prepare`` make what they can share, then finishes them
    one by one, waiting for each one's values (without the GIL).

    Its thread takes calls from a device at once, and parked calls once the first has waited
    ``LINGER``: mostly while the script's thread is inside torch (a backward pass, kernel
    launches). Where ``GATHER`` parked calls have come before that (a loop of short steps), the
    script's thread finishes them itself, at the call that makes them ``GATHER`` (and those
    still waiting when it ``drain``s): two threads taking turns at the GIL for the same Python
    work would only add their hand-overs.

    Only one batch is finished at a time (``_busy``). Only the summariser touches the evidence,
    the judge and the encoder while it has calls; the script's thread touches them only after
    ``drain``, or while it finishes a batch itself, under the controller's lock, which the
    thread never takes. ``put`` waits while its limit of calls are unsent.
    """

    def __init__(
        self,
        finish: Callable[[Call], None],
        prepare: Callable[[list[Call]], None] = lambda calls: None,
        around: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self._finish = finish
        self._prepare = prepare
        self._around = around
        """Entered once around each batch (the controller's ``no_grad``: once a batch, not a call)."""
        self._calls: collections.deque[tuple[Call, float, bool]] = collections.deque()
        """Calls not taken yet: each with when it came and whether it is parked."""
        self._unsent = 0
        """Calls put here whose steps have not been sent."""
        self._busy = False
        """A batch is being finished (by the thread, or by the script's thread in ``put``)."""
        self._draining = 0
        self._waiting_for_sent = 0
        """Threads waiting in ``put`` or ``drain`` for steps to be sent."""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cossim-tui-summariser", daemon=True)
        self._thread.start()

    def put(self, call: Call, *, parked: bool = False) -> None:
        limit = PARKED if parked else IN_FLIGHT + 1  # (IN_FLIGHT waiting, one being finished)
        taken: list[Call] = []
        with self._changed:
            while self._unsent >= limit:
                self._wait_for_sent()
            self._calls.append((call, time.monotonic(), parked))
            self._unsent += 1
            if not parked or len(self._calls) == 1:
                # (A parked call wakes the thread when it is the first waiting: its LINGER starts.)
                self._changed.notify_all()
            elif len(self._calls) >= GATHER and not self._busy and all(p for _, _, p in self._calls):
                taken = self._taken()
        if taken:
            self._finish_batch(taken)

    def drain(self) -> None:
        """Wait until every call put here has been finished. Parked calls still waiting are
        finished on the caller's thread, as ``put`` finishes a batch at ``GATHER`` (waking the
        thread for them would hand the GIL over and back); calls from a device by the thread."""
        while True:
            taken: list[Call] = []
            with self._changed:
                if not self._unsent:
                    return
                if self._calls and not self._busy and all(p for _, _, p in self._calls):
                    taken = self._taken()
                else:
                    self._draining += 1
                    self._changed.notify_all()
                    try:
                        self._wait_for_sent()
                    finally:
                        self._draining -= 1
            if taken:
                # (At the script's end no interceptor marks the thread busy: the summaries' own
                # torch calls are not steps.)
                with intercept.agent_calls():
                    self._finish_batch(taken)

    def _wait_for_sent(self) -> None:
        """Wait (held under ``_changed``) until a call's step has been sent."""
        self._waiting_for_sent += 1
        try:
            self._changed.wait()
        finally:
            self._waiting_for_sent -= 1

    def _taken(self) -> list[Call]:
        """Every call waiting, now busy being finished (held under ``_changed``)."""
        taken = [call for call, _, _ in self._calls]
        self._calls.clear()
        self._busy = True
        return taken

    def _take(self) -> list[Call]:
        """The thread's next calls, once they are due (held under ``_changed``)."""
        while True:
            calls = self._calls
            if calls and not self._busy:
                first_came, first_parked = calls[0][1:]  # (not the call: a lingering thread must not hold it)
                waited = time.monotonic() - first_came
                if self._draining or not first_parked or len(calls) >= GATHER or waited >= LINGER:
                    return self._taken()
                self._changed.wait(LINGER - waited)
            else:
                self._changed.wait()

    def _finish_batch(self, calls: list[Call]) -> None:
        try:
            with self._around():
                self._finish_each(calls)
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    def _finish_each(self, calls: list[Call]) -> None:
        try:
            self._prepare(calls)
        except Exception:  # noqa: BLE001 - what could not be shared is made call by call
            pass
        # Each call is let go of once its step is sent (taken out of ``calls``, which its
        # taker holds too): what its summary made lives no longer than that, rather than
        # piling up behind the batch into the garbage collector's older generations.
        calls.reverse()
        while calls:
            call = calls.pop()
            try:
                self._finish(call)  # never raises: a failure is reported as the call's step
            finally:
                del call
                with self._changed:
                    self._unsent -= 1
                    if self._waiting_for_sent:
                        # Only then: waking the thread for each call of a batch the
                        # script's thread finishes would hand the GIL back and forth.
                        self._changed.notify_all()

    def _run(self) -> None:
        intercept.agent_thread()
        while True:
            with self._changed:
                calls = self._take()
            self._finish_batch(calls)
