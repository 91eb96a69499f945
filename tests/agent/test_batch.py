"""Parked calls: in a free run, a small pair on the CPU is copied at the call and summarised later,
its figures made together with other parked calls'. What the user sees must not change: the
same steps, in order, with the same findings and figures (exactly, or within rounding where a
reduction's order may differ), as if each call had been summarised at the call."""

from __future__ import annotations

import collections
import gc
import math
import random
import sys
import threading
import weakref
from msgspec.structs import astuple

import pytest
import torch
import torch.nn.functional as F

from cossim_tui import protocol
from cossim_tui.agent import batch, summariser
from cossim_tui.agent.call import Intercepted
from cossim_tui.agent.controller import Controller
from cossim_tui.agent.provenance import Provenance
from agent_harness import torch_restored
from small_pairs import KeptMessages, free_run, varied_pairs
from waiting import until


def _cos(controller, x1, x2, dim=-1, site=0):
    """``F.cosine_similarity`` as the interceptor hands it over, from one of three call sites."""
    result = F.cosine_similarity(x1, x2, dim=dim)
    frame = sys._getframe()
    if site == 1:
        frame = _site_one(frame)
    elif site == 2:
        frame = _site_two(frame)
    controller.on_call(Intercepted("cosine_similarity", ("x1", "x2"), x1, x2, dim, 1e-8, result, None, frame))


def _site_one(frame):
    return sys._getframe()


def _site_two(frame):
    return sys._getframe()


@pytest.fixture
def parked(monkeypatch) -> tuple[KeptMessages, Controller]:
    """A controller running freely (``check``) whose every call is parked, and the channel its
    steps arrive on; a batch is taken when ``GATHER`` calls have come, or at the end."""
    monkeypatch.setattr(summariser, "LINGER", 3600.0)
    monkeypatch.setattr(summariser, "AT_ONCE_FIRST", 0)
    channel = KeptMessages()
    return channel, free_run(channel)


def _watch_modules(controller: Controller) -> None:
    """Module provenance for ``controller``, installed in this process (inside ``torch_restored``)."""
    provenance = Provenance(lambda: controller.steps, None)
    provenance.install()
    controller.pipeline.provenance = provenance


def _random_session(seed: int) -> list[tuple]:
    """A seeded sequence of calls: fresh pairs, NaN, zeros, equal values, the same object, stale
    partners, collapsed batches, shared storage, broadcast, another dim, another dtype, a few
    rows, three call sites; some shapes repeat so that calls share their figures."""
    rng = random.Random(seed)
    shapes = [(8, 16), (8, 16), (4, 32), (16, 8), (2, 4, 8), (3, 16)]
    calls: list[tuple] = [(x1, x2, -1, 0) for x1, x2 in varied_pairs()]  # (seeded: the same each time)
    torch.manual_seed(seed)
    earlier: list[torch.Tensor] = []
    for _ in range(150):
        shape = rng.choice(shapes)
        x1, x2 = torch.randn(*shape), torch.randn(*shape)
        kind = rng.randrange(14)
        dim, site = -1, rng.choice((0, 0, 0, 1, 2))
        if kind == 0:
            x1[rng.randrange(shape[0]), 0] = math.nan
        elif kind == 1:
            x2 = torch.zeros(*shape)
        elif kind == 2:
            x2 = x1.clone()  # equal values
        elif kind == 3:
            x2 = x1  # the same object
        elif kind == 4 and earlier:
            partner = rng.choice(earlier)
            x2 = partner if partner.shape == x1.shape else x2  # a stale partner
        elif kind == 5:
            x1 = torch.randn(1, shape[-1]) + 1e-4 * torch.randn(*shape)  # collapsed
        elif kind == 6:
            x2 = x1.detach().view(shape)  # shared storage
        elif kind == 7:
            x1 = torch.randn(1, shape[-1])  # broadcast
        elif kind == 8:
            dim = 0
        elif kind == 9:
            x1, x2 = x1.half(), x2.half()
        elif kind == 10:
            x1, x2 = x1.double(), x2.double()
        elif kind == 11:
            x1 = 5.0 + x1  # a common offset, all of one sign
        elif kind == 12:
            x1[0, 1] = math.inf
        earlier = (earlier + [x1])[-6:]
        calls.append((x1, x2, dim, site))
    return calls


def _steps(calls: list[tuple], park: bool, monkeypatch) -> list[protocol.Message]:
    with monkeypatch.context() as patch:
        if not park:
            patch.setattr(batch, "parkable", lambda x1, x2, result: False)
        channel = KeptMessages()
        controller = free_run(channel)
        for x1, x2, dim, site in calls:
            _cos(controller, x1, x2, dim, site)
        controller.script_ended("finished", 0, None)
        assert (controller._summariser is not None) == park
    return channel.messages


def _same_step(a: protocol.StepCaptured, b: protocol.StepCaptured) -> None:
    assert [(f.code, f.severity, f.message, f.site) for f in a.findings] == [(f.code, f.severity, f.message, f.site) for f in b.findings], a.step
    assert (a.step, a.site, a.function, a.context, a.error, a.paused) == (b.step, b.site, b.function, b.context, b.error, b.paused)
    # The same figures, to the last bits where a reduction's order cannot differ, within rounding
    # where it can.
    assert repr(a.relation) == repr(b.relation) and repr(a.cos) == repr(b.cos), a.step  # (NaN is not == NaN)
    for x, y in zip(a.args, b.args, strict=True):
        assert (x.expr, x.shape, x.dtype, x.device, x.preview, x.nan, x.inf, x.requires_grad, x.note) == (
            y.expr, y.shape, y.dtype, y.device, y.preview, y.nan, y.inf, y.requires_grad, y.note
        )
        assert repr(x.storage) == repr(y.storage)
        assert (x.stats is None) == (y.stats is None) and (x.norm is None) == (y.norm is None)
        if x.stats is not None:
            assert astuple(x.stats) == pytest.approx(astuple(y.stats), rel=1e-12, abs=1e-12, nan_ok=True)
            assert astuple(x.norm) == pytest.approx(astuple(y.norm), rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gather", [8, 64])
def test_parked_calls_make_the_steps_of_calls_summarised_at_the_call(monkeypatch, seed, gather) -> None:
    # Batches only when ``gather`` calls have come (or at the end): the size is the test's.
    monkeypatch.setattr(summariser, "GATHER", gather)
    monkeypatch.setattr(summariser, "LINGER", 3600.0)
    shared: list[int] = []
    share = batch._share
    monkeypatch.setattr(batch, "_share", lambda group, *rest: shared.append(len(group)) or share(group, *rest))
    centred: list[int] = []  # arguments whose common-mode figures were made with a batch's
    centre = batch.centred_statistics
    monkeypatch.setattr(batch, "centred_statistics", lambda values: centred.append(values.shape[0]) or centre(values))
    calls = _random_session(seed)  # the same tensors (and storage addresses) in both sessions
    at_the_call = _steps(calls, park=False, monkeypatch=monkeypatch)
    parked = _steps(calls, park=True, monkeypatch=monkeypatch)
    assert sum(shared) > 20 and max(shared) > 1  # many calls shared their figures
    assert centred  # (the common offsets)
    assert [type(m).__name__ for m in parked] == [type(m).__name__ for m in at_the_call]
    steps = [m for m in parked if isinstance(m, protocol.StepCaptured)]
    assert [s.step for s in steps] == list(range(len(calls)))
    for a, b in zip(at_the_call, parked):
        if isinstance(a, protocol.StepCaptured):
            _same_step(a, b)
    codes = {f.code for s in steps for f in s.findings}
    assert {"stale-partner", "same-object", "identical-values", "shared-storage", "non-finite", "zero-norm", "common-mode"} <= codes


def test_only_small_real_pairs_of_one_shape_on_the_cpu_are_parked() -> None:
    small = torch.randn(8, 16)
    assert batch.parkable(small, torch.randn(8, 16), torch.randn(8))
    assert not batch.parkable(small, torch.randn(1, 16), torch.randn(8))  # broadcast
    assert not batch.parkable(small, torch.randn(8, 16).double(), torch.randn(8))  # two dtypes
    assert not batch.parkable(torch.randn(64, 64), torch.randn(64, 64), torch.randn(64))  # large
    assert not batch.parkable(small.to(torch.complex64), small.to(torch.complex64), torch.randn(8))
    assert not batch.parkable(small.to_sparse(), small.to_sparse(), torch.randn(8))


def test_a_parked_call_keeps_no_autograd_graph_alive(parked) -> None:
    """Up to 64 parked calls wait: their tensors are views without autograd, and the result too,
    so a forward pass's activations are freed as soon as the script lets them go."""
    channel, controller = parked
    weight = torch.randn(16, 16, requires_grad=True)
    x = torch.randn(8, 16) @ weight
    _cos(controller, x, torch.randn(8, 16))
    parked = list(controller._summariser._calls)
    assert parked and all(not c.result.requires_grad and c.result.grad_fn is None for c, _, _ in parked)
    controller.script_ended("finished", 0, None)
    assert channel.steps[0].args[0].grad_fn == "MmBackward0"


def test_graph_liveness_is_read_at_the_call_except_for_what_a_module_made_at_this_step(parked) -> None:
    """A parked call reads at the call whether each argument's graph is live (a backward() may free
    it before the call is summarised), and an earlier step's output is still matched as a stale
    partner with it; an argument a module made at this step is never matched against earlier
    arguments, so its graph is not walked."""
    channel, controller = parked
    with torch_restored():
        _watch_modules(controller)
        layer = torch.nn.Linear(16, 16)
        earlier = layer(torch.randn(8, 16))
        _cos(controller, earlier, torch.randn(8, 16))  # step 0: ``earlier`` was made for it
        earlier.sum().backward()  # its graph is freed
        now = layer(torch.randn(8, 16))
        _cos(controller, now, earlier)  # step 1: ``earlier`` is step 0's, kept across backward()
        parked = [call for call, _, _ in controller._summariser._calls]
        assert [call.fresh for call in parked] == [(True, False), (True, False)]
        assert [call.graph_live for call in parked] == [(None, False), (None, False)]
        controller.script_ended("finished", 0, None)
    steps = channel.steps
    assert [f.code for f in steps[0].findings if f.severity == "error"] == []
    assert "stale-partner" in [f.code for f in steps[1].findings]


def test_an_earlier_output_whose_graph_was_alive_at_the_call_is_not_stale_though_backward_ran_before_its_step_was_made(parked) -> None:
    """A parked call is summarised later; by then a backward() may have freed the graph of an
    argument that belonged to the graph being built at the call (an anchor reused within one
    step). What counts is how it was at the call: no stale partner."""
    channel, controller = parked
    with torch_restored():
        _watch_modules(controller)
        layer = torch.nn.Linear(16, 16)
        earlier = layer(torch.randn(8, 16))
        _cos(controller, earlier, torch.randn(8, 16))  # step 0
        _cos(controller, layer(torch.randn(8, 16)), earlier)  # step 1: ``earlier``'s graph is alive
        earlier.sum().backward()  # frees it, before either step is summarised
        assert len(controller._summariser._calls) == 2  # (both still parked)
        controller.script_ended("finished", 0, None)
    assert "stale-partner" not in [f.code for f in channel.steps[1].findings]


@pytest.fixture
def collector_off():
    """The garbage collector stopped, as if it never ran at the wrong moment: what is alive then
    is what references keep alive, and what the collector would find is counted by hand."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_waiting_calls_give_the_garbage_collector_little_to_track(parked, collector_off) -> None:
    """Up to 64 parked calls wait for their batch. Whatever they hold that the collector tracks is
    promoted into its older generations while they wait, and a training process pays for the
    full collections that follow with all its objects (figure 3 of the benchmarks: 47 µs a call
    over 20,000 calls, when each waiting call held some 40 such objects)."""
    channel, controller = parked
    pairs = [(torch.randn(8, 64), torch.randn(8, 64)) for _ in range(8)]
    for i in range(summariser.GATHER):  # a first batch: the call site and its history exist
        _cos(controller, *pairs[i % 8])
    controller._finish_in_flight()
    gc.collect()
    waiting = 32
    for i in range(waiting):
        _cos(controller, *pairs[i % 8])
    assert len(controller._summariser._calls) == waiting
    gc.collect(0)  # (tuples of plain values are let go of here: only what stays tracked is left)
    tracked = gc.get_objects(generation=1)
    assert len(tracked) <= 12 * waiting, collections.Counter(type(o).__name__ for o in tracked).most_common(8)
    controller.script_ended("finished", 0, None)
    assert [s.step for s in channel.steps] == list(range(summariser.GATHER + waiting))


def test_a_summarised_call_lets_go_of_its_tensors_before_the_next_is_summarised(parked, monkeypatch, collector_off) -> None:
    """A batch's calls are summarised one by one: each call's tensors (and everything its summary
    made) are let go of once its step is sent, not kept until the end of the batch."""
    channel, controller = parked
    views: dict[int, weakref.ref] = {}
    still_alive: list[list[int]] = []
    finish = Controller._finish_one

    def finishing(self, call):
        still_alive.append([step for step, view in views.items() if step < call.step and view() is not None])
        finish(self, call)

    monkeypatch.setattr(Controller, "_finish_one", finishing)
    pairs = [(torch.randn(8, 64), torch.randn(8, 64)) for _ in range(8)]
    for i in range(16):
        _cos(controller, *pairs[i % 8])
    views.update((call.step, weakref.ref(call.x1)) for call, _, _ in controller._summariser._calls)
    controller.script_ended("finished", 0, None)
    assert len(still_alive) == 16 and [s.step for s in channel.steps] == list(range(16))
    assert still_alive == [[]] * 16


def test_a_batch_the_script_finishes_does_not_wake_the_summariser_for_each_call(parked, monkeypatch) -> None:
    """When the script's thread finishes a batch itself (the GATHER-th parked call), the
    summariser's thread waits for calls, not for steps sent: waking it for each call would hand
    the GIL back and forth some 64 times a batch (figure 3: ~50 µs a call)."""
    channel, controller = parked
    pairs = [(torch.randn(8, 64), torch.randn(8, 64)) for _ in range(8)]
    _cos(controller, *pairs[0])  # the summariser exists, its thread waiting for calls
    changed = controller._summariser._changed
    woken: list[int] = []
    notify_all = changed.notify_all
    monkeypatch.setattr(changed, "notify_all", lambda: woken.append(1) or notify_all())
    for i in range(1, summariser.GATHER):  # the last of these finishes the batch, on this thread
        _cos(controller, *pairs[i % 8])
    assert len(channel.steps) == summariser.GATHER
    assert len(woken) <= 1  # (once: the batch is done)
    controller.script_ended("finished", 0, None)


def test_a_parked_call_is_sent_once_it_has_waited_linger_though_no_other_call_comes(monkeypatch) -> None:
    """A loop that goes quiet (a long validation pass, a slow data loader) still has its last
    parked steps on screen: the summariser's thread takes the first parked call once it has
    waited ``LINGER``, without the script ending or calling again."""
    monkeypatch.setattr(summariser, "AT_ONCE_FIRST", 0)
    monkeypatch.setattr(summariser, "LINGER", 0.05)
    channel = KeptMessages()
    controller = free_run(channel)
    _cos(controller, torch.randn(8, 64), torch.randn(8, 64))
    assert controller._summariser is not None  # (parked: not captured at the call)
    until(lambda: channel.steps, timeout=10.0, what="the parked call's step, with no drain")
    assert [s.step for s in channel.steps] == [0]
    controller.script_ended("finished", 0, None)


def test_parked_calls_drained_at_the_script_s_end_make_no_steps_of_the_summaries_own_calls(parked, monkeypatch) -> None:
    """At the script's end the parked calls still waiting are summarised on the script's own
    thread, where no interceptor marks it busy: a function the user watches that the summary
    calls itself (``--watch torch.nn.functional:normalize``) is still no step."""
    from cossim_tui.agent import evidence, intercept

    channel, controller = parked
    watched = intercept._wrap(F.normalize, "normalize", ("input", "input"), lambda args, kwargs: (args[0], args[0], -1, 1e-12))
    monkeypatch.setattr(intercept, "_sink", controller)
    finish = evidence.PendingEvidence.finish
    through: list[int] = []

    def finish_through_a_watched_function(self, equal_pair):
        through.append(self.step)
        watched(torch.randn(4, 8))  # what evidence's own F.normalize would be under --watch
        return finish(self, equal_pair)

    monkeypatch.setattr(evidence.PendingEvidence, "finish", finish_through_a_watched_function)
    for _ in range(3):
        _cos(controller, torch.randn(8, 16), torch.randn(8, 16))
    assert len(controller._summariser._calls) == 3  # (parked, waiting)
    ended = threading.Thread(target=controller.script_ended, args=("finished", 0, None), daemon=True)
    ended.start()
    ended.join(10)
    assert not ended.is_alive(), "the script's end waited for itself"
    assert through == [0, 1, 2]
    assert [(s.step, s.function) for s in channel.steps] == [(0, "cosine_similarity"), (1, "cosine_similarity"), (2, "cosine_similarity")]


@pytest.mark.parametrize("with_nan", [False, True])
def test_a_copy_parked_later_is_the_stale_partner_of_an_argument_captured_at_its_call(monkeypatch, with_nan) -> None:
    """A run's first calls are captured at the call and later ones parked: their fingerprints
    are made on two paths (the call's transfer, a batch's shared figures) and must be the same
    for the same values, a NaN among them included, or a partner recycled across the two goes
    unseen."""
    monkeypatch.setattr(summariser, "LINGER", 3600.0)
    monkeypatch.setattr(summariser, "AT_ONCE_FIRST", 2)
    shared: list[int] = []
    share = batch._share
    monkeypatch.setattr(batch, "_share", lambda group, *shape: shared.append(len(group)) or share(group, *shape))
    channel = KeptMessages()
    controller = free_run(channel)
    torch.manual_seed(11)
    anchor = torch.randn(8, 16)
    if with_nan:
        anchor[2, 5] = math.nan
    _cos(controller, anchor, torch.randn(8, 16))  # step 0, at the call
    _cos(controller, torch.randn(8, 16), torch.randn(8, 16))  # step 1, at the call
    kept = anchor.clone()  # step 0's anchor, kept past its batch (another memory, equal values)
    _cos(controller, kept, torch.randn(8, 16))  # step 2, parked
    _cos(controller, torch.randn(8, 16), torch.randn(8, 16))  # step 3, parked: the two share
    assert len(controller._summariser._calls) == 2
    controller.script_ended("finished", 0, None)
    assert shared == [2]  # (steps 2 and 3, from the batch's figures)
    steps = {s.step: s for s in channel.steps}
    assert sorted(steps) == [0, 1, 2, 3]
    stale = [f for f in steps[2].findings if f.code == "stale-partner"]
    assert len(stale) == 1 and "step 0's" in stale[0].message and "equal values, a copy" in stale[0].message
    assert not any(f.code == "stale-partner" for s in (steps[1], steps[3]) for f in s.findings)
