"""The agent's outbox: every message arrives, in order, whether the socket takes it at once or its
buffer is full for a while (its thread then writes the rest); and a message sent straight wakes
nobody who is not waiting for it."""

from __future__ import annotations

import threading

from cossim_tui import protocol
from cossim_tui.agent.outbox import Outbox


class FillingChannel:
    """A channel whose buffer is full for the first ``full_for`` straight writes (``send_now``
    takes nothing of them), then takes everything; ``send_bytes`` (the thread's) always does."""

    def __init__(self, full_for: int) -> None:
        self.full_for = full_for
        self.data = bytearray()
        self.lock = threading.Lock()

    def send_now(self, data: bytes) -> int:
        with self.lock:
            if self.full_for > 0:
                self.full_for -= 1
                return 0
            self.data += data
            return len(data)

    def send_bytes(self, data: bytes) -> None:
        with self.lock:
            self.data += data

    def messages(self) -> list[protocol.Message]:
        decoder = protocol.FrameDecoder()
        return [protocol.decode_message(body) for body in decoder.feed(bytes(self.data))]


def _ended(number: int) -> protocol.ScriptEnded:
    return protocol.ScriptEnded(status="finished", exit_code=number, exception=None)


def test_every_message_arrives_in_order_though_the_buffer_was_full_for_a_while() -> None:
    channel = FillingChannel(full_for=5)
    outbox = Outbox(channel, on_broken=lambda: None)  # type: ignore[arg-type]
    for number in range(200):
        outbox.put(_ended(number))
    outbox.flush()
    assert [m.exit_code for m in channel.messages()] == list(range(200))


def test_a_message_sent_straight_wakes_no_one_who_is_not_waiting(monkeypatch) -> None:
    """Once the buffer has been full, the outbox's thread waits for a queue; a message the socket
    takes at once must not wake it (each wake hands it the GIL for nothing)."""
    channel = FillingChannel(full_for=1)
    outbox = Outbox(channel, on_broken=lambda: None)  # type: ignore[arg-type]
    outbox.put(_ended(0))  # queued: the thread starts and writes it
    outbox.flush()
    woken: list[int] = []
    notify_all = outbox._changed.notify_all
    monkeypatch.setattr(outbox._changed, "notify_all", lambda: woken.append(1) or notify_all())
    for number in range(1, 51):
        outbox.put(_ended(number))
    assert woken == []
    outbox.flush()
    assert [m.exit_code for m in channel.messages()] == list(range(51))
