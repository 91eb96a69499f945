"""Calls summarised behind the script: while it runs freely, a small pair on a CUDA device that
gets no pictures is copied to the host without waiting, and the agent's own thread summarises,
judges and sends its step later. What the user sees must not change: the same steps with the
same figures and findings, in order, each as its tensors were at the call (values, storage,
autograd graph), and none lost at the end.

Without a GPU, these tests let the CPU stand in: a small CPU pair takes the host-copy path and
its transfer is started, not fetched (``HostTransfer.start`` copies CPU values at once), and
the summariser's wait for the values is held back where a test needs calls to stay in flight.
"""

from __future__ import annotations

import msgspec.structs
import re
import threading
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from cossim_tui import protocol
from cossim_tui.agent import transfer
from cossim_tui.agent.controller import Controller
from cossim_tui.agent.summariser import IN_FLIGHT
from cossim_tui.protocol import AgentConfig
from waiting import parked_in, until
from small_pairs import KeptMessages, as_if_on_a_device, call, varied_pairs
from small_pairs import free_run as _controller


@pytest.fixture
def cpu_as_device(monkeypatch):
    as_if_on_a_device(monkeypatch)
    # The first call summarised behind the script makes CUDA graph captures wait for the
    # agent's thread (``intercept.before_graph_capture``): torch's own, put back afterwards.
    graph = getattr(torch.cuda, "CUDAGraph", None)
    if graph is not None:
        monkeypatch.setattr(graph, "capture_begin", graph.capture_begin)


@pytest.fixture
def behind(monkeypatch, cpu_as_device):
    """...and its transfer is started without waiting, as on a CUDA device."""
    monkeypatch.setattr(transfer, "runs_behind", lambda device: True)


@pytest.fixture
def gate(monkeypatch):
    """Values that have not arrived until the test opens the gate: the summariser waits for
    them, as it waits for a copy still running on a GPU."""
    opened = threading.Event()
    fetch = transfer.HostTransfer.fetch

    def fetch_when_open(self: Any) -> None:
        if self._started is not None:
            assert opened.wait(10), "the gate was never opened"
        fetch(self)

    monkeypatch.setattr(transfer.HostTransfer, "fetch", fetch_when_open)
    return opened


def _pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        *varied_pairs(),
        (torch.randn(64, 64), torch.randn(64, 64)),  # too large to copy: captured at once, in its turn
        (torch.randn(8, 16), torch.randn(8, 16)),
    ]


def _session(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[protocol.Message], bool]:
    """What the agent sent, and whether any call was summarised behind the script."""
    channel = KeptMessages()
    controller = _controller(channel)
    for x1, x2 in pairs:
        call(controller, x1, x2)
    controller.script_ended("finished", 0, None)
    return channel.messages, controller._summariser is not None


def _comparable(step: protocol.StepCaptured) -> str:
    step = msgspec.structs.replace(step, wall_time=0.0)
    return repr(step)


def test_steps_summarised_behind_the_script_are_the_steps_summarised_at_the_call(monkeypatch, cpu_as_device) -> None:
    pairs = _pairs()  # the same tensors (and so the same storage addresses) in both sessions
    at_the_call, any_behind = _session(pairs)
    assert not any_behind
    monkeypatch.setattr(transfer, "runs_behind", lambda device: True)
    behind_the_script, any_behind = _session(pairs)
    assert any_behind
    assert [type(m).__name__ for m in behind_the_script] == [type(m).__name__ for m in at_the_call]
    assert [m.step for m in behind_the_script if isinstance(m, protocol.StepCaptured)] == list(range(14))
    for a, b in zip(at_the_call, behind_the_script):
        if isinstance(a, protocol.StepCaptured):
            assert _comparable(a) == _comparable(b), a.step
    codes = [[f.code for f in m.findings] for m in behind_the_script if isinstance(m, protocol.StepCaptured)]
    assert "stale-partner" in codes[1] and "stale-partner" in codes[2] and "same-object" in codes[3]
    assert "collapse" in codes[6] and "common-mode" in codes[7] and "non-finite" in codes[8]


def test_calls_wait_for_their_values_and_then_go_out_in_order(behind, gate) -> None:
    channel = KeptMessages()
    controller = _controller(channel)
    for _ in range(3):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))  # returns at once: nothing arrived
    assert channel.steps == []
    gate.set()
    controller._finish_in_flight()
    assert [s.step for s in channel.steps] == [0, 1, 2]


def test_past_in_flight_calls_the_script_waits_for_the_summariser(behind, gate) -> None:
    channel = KeptMessages()
    controller = _controller(channel)
    made: list[int] = []

    def script() -> None:
        for step in range(IN_FLIGHT + 3):
            call(controller, torch.randn(8, 16), torch.randn(8, 16))
            made.append(step)

    thread = threading.Thread(target=script)
    thread.start()
    # One call is being summarised (waiting for its values), IN_FLIGHT wait their turn, and
    # the next call waits for room.
    until(lambda: len(made) == IN_FLIGHT + 1, 10, "IN_FLIGHT + 1 calls")
    until(lambda: parked_in(thread, "put"), 10, "the script to wait for room")
    assert len(made) == IN_FLIGHT + 1 and channel.steps == []
    gate.set()
    thread.join(10)
    controller._finish_in_flight()
    assert [s.step for s in channel.steps] == list(range(IN_FLIGHT + 3))


def test_a_call_captured_at_once_waits_for_the_calls_before_it(behind, gate) -> None:
    channel = KeptMessages()
    controller = _controller(channel)
    call(controller, torch.randn(8, 16), torch.randn(8, 16))
    call(controller, torch.randn(8, 16), torch.randn(8, 16))
    large = threading.Thread(target=call, args=(controller, torch.randn(64, 64), torch.randn(64, 64)))  # too large to copy
    large.start()
    until(lambda: parked_in(large, "drain"), 10, "the large call to wait for the calls in flight")
    assert channel.steps == []  # it waits for steps 0 and 1, which wait for their values
    gate.set()
    large.join(10)
    assert [s.step for s in channel.steps] == [0, 1, 2]


def test_the_end_of_the_script_sends_every_call_in_flight_before_it(behind, gate) -> None:
    channel = KeptMessages()
    controller = _controller(channel)
    for _ in range(4):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
    assert channel.steps == []  # all four in flight
    threading.Timer(0.1, gate.set).start()
    controller.script_ended("error", 1, "RuntimeError: boom")
    kinds = [type(m).__name__ for m in channel.messages]
    assert kinds == ["StepCaptured"] * 4 + ["ScriptEnded"]
    assert [s.step for s in channel.steps] == [0, 1, 2, 3]


def test_only_steps_that_cannot_stop_and_get_no_pictures_are_summarised_behind(behind, monkeypatch) -> None:
    monkeypatch.setattr(protocol, "PICTURE_INTERVAL", 3600.0)
    channel = KeptMessages()
    controller = _controller(channel, pictures="paced")
    for _ in range(3):  # one call site: the first step is pictured, the others are not
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
    assert controller._summariser is not None
    controller._finish_in_flight()
    assert [bool(s.args[0].strip) for s in channel.steps] == [True, False, False]

    channel = KeptMessages()
    controller = _controller(channel, pictures="every-step")
    call(controller, torch.randn(8, 16), torch.randn(8, 16))
    assert controller._summariser is None and len(channel.steps) == 1

    for mode in ("step", "continue"):
        channel = KeptMessages()
        controller = Controller(channel, AgentConfig(mode=mode, break_on=["error"], pictures="none"))  # type: ignore[arg-type]
        controller._wait_for_command = lambda: None  # type: ignore[method-assign]
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
        assert controller._summariser is None and len(channel.steps) == 1

    channel = KeptMessages()
    controller = _controller(channel)
    controller._wait_for_command = lambda: None  # type: ignore[method-assign]
    controller._pause_requested = True  # `p` while running freely: this call stops
    call(controller, torch.randn(8, 16), torch.randn(8, 16))
    assert controller._summariser is None and channel.steps[0].paused


def test_a_step_in_flight_shows_its_values_as_they_were_at_the_call(behind, gate) -> None:
    channel = KeptMessages()
    controller = _controller(channel)
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    expected = F.cosine_similarity(a, b, dim=-1)
    preview = a.reshape(-1)[:6].tolist()
    call(controller, a, b)
    a.mul_(-1.0)  # the script changes the tensor in place before its step is summarised
    b.zero_()
    assert channel.steps == []
    gate.set()
    controller.script_ended("finished", 0, None)
    (step,) = channel.steps
    assert step.args[0].preview == pytest.approx(preview, rel=1e-6)
    assert step.cos.mean == pytest.approx(expected.double().mean().item(), rel=1e-6)
    assert "zero-norm" not in [f.code for f in step.findings]


def test_a_backward_before_the_summary_does_not_make_a_live_anchor_stale(behind, gate) -> None:
    """An anchor compared twice within one batch is not a stale partner; an anchor kept across
    ``backward()`` is. Whether its graph was freed is read at the call, not when summarised."""
    torch.manual_seed(1)
    model = torch.nn.Linear(16, 16)
    channel = KeptMessages()
    controller = _controller(channel)
    anchor = model(torch.randn(8, 16))
    for step in range(3):  # one call site, as in a training loop
        if step == 2:
            anchor.sum().backward()  # frees the graph while steps 0 and 1 are still in flight
        call(controller, anchor, model(torch.randn(8, 16)))  # steps 0 and 1: the same batch, a live graph
    assert channel.steps == []
    gate.set()
    controller.script_ended("finished", 0, None)
    codes = [[f.code for f in s.findings] for s in channel.steps]
    assert "stale-partner" not in codes[1]
    assert "stale-partner" in codes[2]


def test_a_failing_summary_behind_the_script_is_reported_at_its_step(behind, monkeypatch) -> None:
    def broken(self: Any) -> None:
        assert threading.current_thread().name == "cossim-tui-summariser"  # summarised behind the script
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    channel = KeptMessages()
    controller = _controller(channel)
    with monkeypatch.context() as patch:
        patch.setattr(transfer.HostTransfer, "fetch", broken)
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
        controller._finish_in_flight()
    controller.script_ended("error", 1, "RuntimeError: CUDA error: an illegal memory access was encountered")
    (step,) = channel.steps
    assert step.step == 0 and "illegal memory access" in (step.args[0].note or "")
    assert isinstance(channel.messages[-1], protocol.ScriptEnded)


def test_start_copies_cpu_values_at_once() -> None:
    values = torch.arange(4.0)
    shipment = transfer.HostTransfer()
    slot = shipment.vector(values)
    kept = shipment.copy(torch.ones(3))
    shipment.start()
    values.zero_()
    shipment.fetch()
    assert shipment[slot] == [0.0, 1.0, 2.0, 3.0] and shipment.host(kept).tolist() == [1.0, 1.0, 1.0]


def test_the_agents_own_thread_is_never_intercepted(behind, monkeypatch) -> None:
    """A function the user watches (``--watch torch.nn.functional:normalize``) that the agent's
    thread calls itself while summarising is no step there: it would wait for itself."""
    from cossim_tui.agent import evidence, intercept

    channel = KeptMessages()
    controller = _controller(channel)
    watched = intercept._wrap(F.normalize, "normalize", ("input", "input"), lambda args, kwargs: (args[0], args[0], -1, 1e-12))
    monkeypatch.setattr(intercept, "_sink", controller)
    finish = evidence.PendingEvidence.finish

    def finish_through_a_watched_function(self: Any, equal_pair: bool) -> Any:
        watched(torch.randn(4, 8))  # what evidence's own F.normalize would be under --watch
        return finish(self, equal_pair)

    monkeypatch.setattr(evidence.PendingEvidence, "finish", finish_through_a_watched_function)
    call(controller, torch.randn(8, 16), torch.randn(8, 16))
    ended = threading.Thread(target=controller.script_ended, args=("finished", 0, None), daemon=True)
    ended.start()
    ended.join(10)
    assert not ended.is_alive(), "the agent's thread waited for itself"
    (step,) = channel.steps
    assert step.step == 0 and step.function == "cosine_similarity" and step.args[0].note is None


def test_a_stale_partner_is_confirmed_against_the_earlier_values_as_they_were(behind, gate) -> None:
    """A copy kept past its batch, of a buffer the script refills right after the call: the
    partner equals what the buffer held at the earlier call, whatever it holds by the time the
    step is summarised."""
    torch.manual_seed(0)
    channel = KeptMessages()
    controller = _controller(channel)
    bank = torch.randn(8, 16)
    kept = None
    for step in range(2):  # one call site
        a, b = (bank, torch.randn(8, 16)) if step == 0 else (torch.randn(8, 16), kept)
        call(controller, a, b)
        kept = bank.clone()
        if step == 1:
            bank.copy_(torch.randn(8, 16))  # refilled while step 1 waits to be summarised
    assert channel.steps == []
    gate.set()
    controller.script_ended("finished", 0, None)
    assert [[f.code for f in s.findings if f.code == "stale-partner"] for s in channel.steps] == [[], ["stale-partner"]]


def test_a_cuda_graph_capture_waits_for_the_agents_thread(monkeypatch) -> None:
    from cossim_tui.agent import intercept

    events: list[str] = []

    class Graph:  # stands in for torch.cuda.CUDAGraph
        def capture_begin(self, pool: Any = None, capture_error_mode: str = "global") -> None:
            events.append(f"capture {capture_error_mode}")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    intercept.before_graph_capture(lambda: events.append("drained"))
    intercept.before_graph_capture(lambda: events.append("twice"))  # installed once
    Graph().capture_begin(capture_error_mode="thread_local")
    assert events == ["drained", "capture thread_local"]


def test_no_copy_runs_behind_a_cuda_graph_capture(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert transfer.runs_behind(torch.device("cuda")) and not transfer.runs_behind(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not transfer.runs_behind(torch.device("cuda"))


def test_a_step_in_flight_shows_its_tensors_as_they_were_at_the_call(monkeypatch, cpu_as_device, gate) -> None:
    """What the script does to the tensors' metadata right after the call (a ``.data =``,
    ``requires_grad_``) does not reach a step summarised behind it."""

    def session(behind: bool) -> list[str]:
        torch.manual_seed(3)
        anchor = torch.randn(8, 16, requires_grad=True)
        # The anchor; then a detached view of it (a stale partner: same memory, detached); then a fresh pair.
        pairs = [(anchor, torch.randn(8, 16)), (torch.randn(8, 16), anchor.detach()), (torch.randn(8, 16), torch.randn(8, 16))]
        gate.clear()
        with monkeypatch.context() as patch:
            patch.setattr(transfer, "runs_behind", lambda device: behind)
            channel = KeptMessages()
            controller = _controller(channel)
            for a, b in pairs:
                call(controller, a, b)
                if behind:  # changed while the step waits to be summarised
                    a.data = a.data.unsqueeze(0).clone()
                    b.data = torch.randn(3, 5)
                    b.requires_grad_()
            assert len(channel.steps) == (0 if behind else 3)
            gate.set()
            controller.script_ended("finished", 0, None)
            return [_without_addresses(_comparable(step)) for step in channel.steps]

    at_the_call = session(False)
    assert len(at_the_call) == 3 and "same memory, detached" in at_the_call[1]
    assert session(True) == at_the_call


def _without_addresses(text: str) -> str:
    """A step's text without its storage addresses, which differ from one session's tensors to
    the next."""
    return re.sub(r"(ptr|span)=\[?[0-9, ]+\]?", "", text)
