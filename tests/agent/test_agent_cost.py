"""What the agent's per-call savings must not change: every step, and any value in it, arrives
through the one codec exactly as it was sent (NaN as NaN), the ``pictures`` setting travels
and is checked like the other settings, and the pictures are made where someone can see them
(every step, every stop and a bounded rate, or never) and nowhere else."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple, replace
from small_pairs import KeptMessages, as_if_on_a_device, call, free_run, varied_pairs

from cossim_tui import protocol
from cossim_tui.agent.controller import Controller
from cossim_tui.agent.projection import EVERY
from cossim_tui.protocol import AgentConfig, ProtocolError, convert, to_builtins

# --------------------------------------------------------------------------------------
# The wire: one codec, every value as it was sent
# --------------------------------------------------------------------------------------


def _captured_steps() -> list[protocol.StepCaptured]:
    """Real steps from the agent: images, broadcasting, NaN, integers, a stale partner."""
    channel = KeptMessages()
    controller = Controller(channel, AgentConfig(mode="run", break_on=["never"]))  # type: ignore[arg-type]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    for _ in range(3):
        a = torch.randn(8, 64)
        call(controller, a, torch.randn(8, 64))
        z = conv(torch.randn(2, 3, 8, 8)).flatten(1)
        call(controller, z, z.detach())
        call(controller, torch.randn(3, 30), torch.randn(1, 30), dim=1)
        call(controller, torch.randint(0, 5, (4, 9)).float(), torch.randn(4, 9), dim=0)
        call(controller, torch.tensor([[1.0, math.nan]]), torch.randn(1, 2))
    controller._outbox.flush()
    return channel.steps


STEPS = _captured_steps()


def _same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN (a NaN similarity must arrive as NaN, not as null)."""
    return protocol.encode_body(a) == protocol.encode_body(b) and _floats(a) == _floats(b)  # type: ignore[arg-type]


def _floats(value: object) -> list[str]:
    """Every float in a record, as text: ``nan``, ``inf`` and ``-0.0`` stay themselves."""
    found: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, float):
            found.append(repr(v))
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(to_builtins(value))
    return found


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"step{s.step}")
def test_a_captured_step_arrives_as_it_was_sent(step: protocol.StepCaptured) -> None:
    decoded = protocol.decode_message(protocol.encode(step)[4:])
    assert _same(decoded, step)


def test_a_nan_in_a_captured_step_arrives_as_nan() -> None:
    with_nan = [s for s in STEPS if s.args[0].nan]
    assert with_nan, "the steps above include a NaN argument"
    for step in with_nan:
        decoded = protocol.decode_message(protocol.encode(step)[4:])
        assert any(math.isnan(v) for v in decoded.args[0].preview)


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53).map(float))
INTS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(STEPS) - 1),
    preview=st.lists(FLOATS, max_size=12),
    shape=st.lists(INTS, max_size=10),
    strip=st.lists(st.floats(allow_nan=True), max_size=60),
    expr=TEXT,
    grad_fn=st.one_of(st.none(), TEXT),
    norm_min=FLOATS,
    wall_time=FLOATS,
    context=st.dictionaries(TEXT, FLOATS, max_size=3),
    evidence=st.lists(TEXT, max_size=3),
)
def test_any_valid_values_arrive_as_they_were_sent(
    index, preview, shape, strip, expr, grad_fn, norm_min, wall_time, context, evidence
) -> None:
    """Any string (lone surrogates too) and any float (NaN, infinities, -0.0) crosses the wire
    and comes back out of a trace line as itself."""
    step = replace(STEPS[index], wall_time=wall_time, context=context)
    first = replace(step.args[0], preview=preview, shape=shape, strip=strip, expr=expr, grad_fn=grad_fn)
    if first.norm is not None:
        first.norm = replace(first.norm, min=norm_min)
    step.args = [first, *step.args[1:]]
    step.findings = [protocol.Finding("zero-norm", "error", "m", "s", 1, evidence)]
    decoded = protocol.decode_message(protocol.encode(step)[4:])
    assert _floats(decoded) == _floats(step)
    assert decoded.args[0].expr == expr and decoded.args[0].grad_fn == grad_fn
    assert decoded.args[0].shape == shape and decoded.findings[0].evidence == evidence


@pytest.mark.parametrize("pid", [2**63 - 1, 2**64, 2**70, -(2**70)])
def test_integers_beyond_64_bits_arrive_as_they_were_sent(pid: int) -> None:
    """msgpack (the codec's test for non-finite floats) stops at 64 bits; JSON does not."""
    hello = protocol.Hello(pid=pid, python="3.11", target="t.py", argv=[])
    assert protocol.decode_message(protocol.encode(hello)[4:]) == hello


def test_every_message_kind_arrives_as_it_was_sent() -> None:
    messages = [
        protocol.Hello(pid=1, python="3.11", target="train.py", argv=["train.py", "--lr", "0.1"]),
        protocol.TorchHooked(version="2.4", intercepted=["F.cosine_similarity"]),
        protocol.ScriptEnded(status="error", exit_code=1, exception="ValueError: é"),
        protocol.Resume(mode="continue"),
        protocol.Pause(),
        protocol.Mute(code="collapse", site="*"),
        protocol.SetBreak(condition="cos.mean > 0.999"),
        protocol.BreakChanged(condition="", error=None, step=None),
        protocol.Start(config=protocol.AgentConfig(mode="run", watch=["m:f"], max_steps=None)),
        *STEPS[:3],
    ]
    assert {type(m) for m in messages} == set(protocol.MESSAGE_TYPES.values())
    for message in messages:
        decoded = protocol.decode_message(protocol.encode(message)[4:])
        assert type(decoded) is type(message) and _same(decoded, message)


# --------------------------------------------------------------------------------------
# The pictures setting
# --------------------------------------------------------------------------------------


def test_pictures_travel_with_the_config_and_default_to_every_step_for_older_launchers() -> None:
    config = AgentConfig(mode="run", pictures="paced")
    assert convert(json.loads(json.dumps(to_builtins(config))), AgentConfig) == config
    assert convert({"mode": "run"}, AgentConfig).pictures == "every-step"  # a launcher from before


@pytest.mark.parametrize("value", ["sometimes", 1, None, True])
def test_an_unknown_pictures_setting_is_refused(value: Any) -> None:
    with pytest.raises(ProtocolError):
        convert({"pictures": value}, AgentConfig)


def test_check_asks_for_pictures_only_when_recording(tmp_path) -> None:
    from cossim_tui import headless
    from cossim_tui.session.events import Target

    configs: list[AgentConfig] = []

    class NoRun:
        """A child started early, waiting for its settings."""

        def __init__(self, target: Target) -> None:
            self.target = target

        def start(self, config: AgentConfig) -> None:
            configs.append(config)

        def events(self) -> Any:
            yield headless.ScriptExited("finished", 0, None, None)

        def terminate(self) -> None:
            pass

    target = Target(script="train.py")
    for record in (None, str(tmp_path / "run.jsonl")):
        options = type("Options", (), dict(record=record, ignore=[], watch=[], max_steps=None, fail_on="error", json=None))()
        headless.run_check(NoRun(target), options)  # type: ignore[arg-type]
    assert [c.pictures for c in configs] == ["none", "paced"]


# --------------------------------------------------------------------------------------
# Where the agent makes pictures
# --------------------------------------------------------------------------------------



def _run(pictures: str, calls: int) -> list[protocol.StepCaptured]:
    channel = KeptMessages()
    controller = free_run(channel, pictures)
    torch.manual_seed(0)
    for _ in range(calls):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
    controller._finish_in_flight()  # steps summarised behind the script (parked calls) too
    controller._outbox.flush()
    return channel.steps


def _pictured(step: protocol.StepCaptured) -> bool:
    return bool(step.args[0].strip)


def test_without_pictures_no_step_has_strips_or_maps() -> None:
    steps = _run("none", 40)
    assert len(steps) == 40
    assert not any(_pictured(s) or s.projection is not None for s in steps)
    assert all(s.args[0].stats is not None and s.cos is not None for s in steps)  # the rest is all there


def test_every_step_has_its_strips_as_before() -> None:
    steps = _run("every-step", EVERY + 4)
    assert all(_pictured(s) for s in steps)
    assert [s.step for s in steps if s.projection is not None] == [0, EVERY]


def test_paced_pictures_come_at_a_bounded_rate_while_running_freely(monkeypatch) -> None:
    # An interval longer than the test: however slow the machine, only the first step is due.
    monkeypatch.setattr(protocol, "PICTURE_INTERVAL", 3600.0)
    steps = _run("paced", 60)
    pictured = [s.step for s in steps if _pictured(s)]
    assert pictured == [0]
    # The map is fed and drawn on the pictured steps only.
    assert {s.step for s in steps if s.projection is not None} <= set(pictured)


def test_paced_pictures_take_turns_per_call_site_so_none_is_starved(monkeypatch) -> None:
    """``cos(a, p); cos(a, n)`` in one loop: the first site must not take every turn."""
    monkeypatch.setattr(protocol, "PICTURE_INTERVAL", 3600.0)
    channel = KeptMessages()
    controller = free_run(channel, "paced")
    for _ in range(10):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))  # the positive pair's site
        call(controller, torch.randn(8, 16), torch.randn(8, 16))  # the negative pair's site
    controller._outbox.flush()
    pictured = [(s.step, s.site.line) for s in channel.steps if _pictured(s)]
    assert [step for step, _ in pictured] == [0, 1]
    assert pictured[0][1] != pictured[1][1]


def test_paced_pictures_are_made_for_every_step_the_script_stops_at() -> None:
    channel = KeptMessages()
    controller = Controller(channel, AgentConfig(mode="continue", break_on=["error"], pictures="paced"))  # type: ignore[arg-type]
    waits: list[int] = []
    controller._wait_for_command = lambda: waits.append(controller.steps)  # type: ignore[method-assign]
    x = torch.randn(8, 16)
    call(controller, torch.randn(8, 16), torch.randn(8, 16))  # step 0: pictured, no stop
    call(controller, x, x)  # step 1: same-object, an error: it stops, though not due pictures
    controller._outbox.flush()
    first, second = channel.steps
    assert waits == [2] and second.paused and not first.paused
    assert _pictured(second) and second.projection is not None


def _stopped_by_the_condition_at_step_1(pictures: str) -> tuple[Any, Any, list[int]]:
    """Two calls under ``continue`` with the break condition ``step == 1``: both steps, and the
    step counts at which the script waited."""
    channel = KeptMessages()
    controller = Controller(channel, AgentConfig(mode="continue", break_on=["never"], pictures=pictures))  # type: ignore[arg-type]
    waits: list[int] = []
    controller._wait_for_command = lambda: waits.append(controller.steps)  # type: ignore[method-assign]
    assert controller.condition.set("step == 1") is None
    for _ in range(2):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
    controller._outbox.flush()
    first, second = channel.steps
    return first, second, waits


def test_a_step_the_break_condition_stops_at_gets_its_pictures_and_a_map() -> None:
    first, second, waits = _stopped_by_the_condition_at_step_1("paced")
    assert not first.paused and waits == [2] and second.paused and second.break_condition is not None
    assert _pictured(second) and second.projection is not None and second.projection.step == 1


def test_a_step_the_break_condition_stops_at_has_a_map_even_when_it_was_pictured_anyway() -> None:
    """Every step gets pictures here, so the capture fed the step's rows already (no map was due);
    the break condition then stops at it, and a pause always shows its map."""
    first, second, waits = _stopped_by_the_condition_at_step_1("every-step")
    assert waits == [2] and second.paused and second.break_condition is not None
    assert _pictured(second) and second.projection is not None and second.projection.step == 1


def test_a_step_a_finding_stops_at_feeds_the_map_once(monkeypatch) -> None:
    """The capture makes the map of a step a finding stops at; a map that cannot be drawn (NaN
    rows) must not send the step's rows into the map a second time."""
    monkeypatch.setattr(protocol, "PICTURE_INTERVAL", 3600.0)
    channel = KeptMessages()
    controller = Controller(channel, AgentConfig(mode="continue", break_on=["error"], pictures="paced"))  # type: ignore[arg-type]
    controller._wait_for_command = lambda: None  # type: ignore[method-assign]
    broken = torch.randn(8, 16)
    broken[0, 0] = math.nan
    observed: list[int] = []
    for step, x in enumerate((torch.randn(8, 16), broken)):  # one call site: step 0 pictured; step 1 non-finite, an error: it stops
        call(controller, x, torch.randn(8, 16))
        if step == 0:  # from here on, count what the map is given
            monkeypatch.setattr(
                controller.pipeline.projections,
                "observe",
                lambda step, *a, observe=controller.pipeline.projections.observe, **k: observed.append(step) or observe(step, *a, **k),
            )
    controller._outbox.flush()
    assert channel.steps[1].paused and _pictured(channel.steps[1])
    assert observed == [1]


# --------------------------------------------------------------------------------------
# A small pair on a device is summarised from host copies of its values
# --------------------------------------------------------------------------------------


def _session(monkeypatch, on_device: bool, pictures: str) -> list[protocol.StepCaptured]:
    """One scripted session of pairs; with ``on_device``, every small pair takes the path a pair
    on a GPU takes (its values and result copied to the host in the call's one transfer)."""
    if on_device:
        as_if_on_a_device(monkeypatch)
    channel = KeptMessages()
    controller = free_run(channel, pictures)
    pairs = [*varied_pairs(), (torch.randn(16, 8), torch.randn(16, 8))]  # the last reduced along dim 0 below
    for x1, x2 in pairs[:-1]:
        call(controller, x1, x2)
    call(controller, *pairs[-1], dim=0)
    controller._finish_in_flight()  # steps summarised behind the script (parked calls) too
    controller._outbox.flush()
    return channel.steps


@pytest.mark.parametrize("pictures", ["none", "every-step"])
def test_a_small_pair_summarised_from_host_copies_reads_as_one_summarised_where_it_lives(monkeypatch, pictures) -> None:
    here = _session(monkeypatch, on_device=False, pictures=pictures)
    copied = _session(monkeypatch, on_device=True, pictures=pictures)
    assert len(here) == len(copied) == 13
    for a, b in zip(here, copied):
        a.wall_time = b.wall_time = 0.0
        assert [f.code for f in a.findings] == [f.code for f in b.findings], a.step
        # The same figures, to the last bits where the order of a reduction cannot differ, and
        # within rounding where it can.
        assert repr(a.relation) == repr(b.relation) and repr(a.cos) == repr(b.cos), a.step  # (NaN is not == NaN)
        for x, y in zip(a.args, b.args):
            assert (x.shape, x.dtype, x.device, x.preview, x.nan, x.inf, x.strip) == (y.shape, y.dtype, y.device, y.preview, y.nan, y.inf, y.strip)
            assert (x.storage.offset, x.storage.strides, x.storage.element_size) == (y.storage.offset, y.storage.strides, y.storage.element_size)
            assert (x.stats is None) == (y.stats is None) and (x.norm is None) == (y.norm is None)
            if x.stats is not None:
                assert astuple(x.stats) == pytest.approx(astuple(y.stats), rel=1e-12, abs=1e-12, nan_ok=True)
                assert astuple(x.norm) == pytest.approx(astuple(y.norm), rel=1e-12, nan_ok=True)
        assert (a.projection is None) == (b.projection is None), a.step
    assert [f.code for f in copied[1].findings if f.code == "stale-partner"] == ["stale-partner"]
    assert "stale-partner" in [f.code for f in copied[2].findings]
    assert "collapse" in [f.code for f in copied[6].findings]
    assert "common-mode" in [f.code for f in copied[7].findings]


def test_a_small_pair_on_a_device_is_copied_in_the_calls_one_transfer(monkeypatch) -> None:
    """What travels: the values of both arguments and the result, once, with the rest."""
    from cossim_tui.agent import transfer as transfer_module

    fetched: list[int] = []
    fetch = transfer_module.HostTransfer.fetch
    monkeypatch.setattr(transfer_module.HostTransfer, "fetch", lambda self: fetched.append(len(self._copies)) or fetch(self))
    _session(monkeypatch, on_device=True, pictures="none")
    copies = [n for n in fetched if n]
    assert copies == [1] * 13  # one copy in each call's transfer: every pair here is small and alike


def test_the_run_s_end_sends_the_latest_map_of_every_site_that_ran_on() -> None:
    """Maps are made every few steps, so the last one on screen was of a step long before the
    end (``demo/collapse.py``: "map of step 9"); a site of vectors of one number (``dim=0`` over
    a batch of one, ``demo/wrong_dim.py``) had none at all. The end of the run sends each site's
    map of its latest rows, and no extra step: one record per step."""
    channel = KeptMessages()
    controller = free_run(channel, "every-step")
    torch.manual_seed(0)
    for _ in range(20):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))  # steps 0, 2, …, 38
        call(controller, torch.randn(1, 32), torch.randn(1, 32), dim=0)  # steps 1, 3, …, 39
    controller.script_ended("finished", 0, None)
    steps = channel.steps
    assert len(steps) == 40
    sites = {s.step: s.site.label for s in steps}
    assert [s.step for s in steps if s.projection is not None] == [0, 1, 16, 17, 32, 33]
    ended = channel.messages[-1]
    assert isinstance(ended, protocol.ScriptEnded)
    assert [(m.step, m.dim_size) for m in ended.maps] == [(38, 16), (39, 1)]
    assert sites[38] != sites[39]
    # Each holds its site's latest rows: 128 a side, the last 16 calls' 8 at the first site
    # (steps 8, 10, …, 38), every call's 32 vectors of one number at the other.
    assert (ended.maps[0].first_step, len(ended.maps[0].x)) == (8, 2 * 128)
    assert (ended.maps[1].first_step, len(ended.maps[1].x)) == (39 - 2 * 3, 2 * 128)


def test_a_free_run_shorter_than_the_picture_interval_ends_on_a_map_of_its_last_step() -> None:
    """``r`` over ``demo/collapse_fixed.py``'s 24 steps, all within one picture interval: only
    its first step was pictured, so its rows were the last ones fed, and the map at the end
    said "map of step 1". The end's map is of the last call, whatever was pictured."""
    channel = KeptMessages()
    controller = free_run(channel, "paced")
    torch.manual_seed(0)
    for _ in range(24):
        call(controller, torch.randn(8, 16), torch.randn(8, 16))
    controller.script_ended("finished", 0, None)
    steps = channel.steps
    assert len(steps) == 24 and sum(s.projection is not None for s in steps) <= 2
    ended = channel.messages[-1]
    assert isinstance(ended, protocol.ScriptEnded)
    assert [m.step for m in ended.maps] == [23]


def test_a_pause_at_a_site_of_vectors_of_one_number_gets_its_map() -> None:
    channel = KeptMessages()
    controller = Controller(channel, AgentConfig(mode="continue", break_on=["error"], pictures="paced"))  # type: ignore[arg-type]
    waits: list[int] = []
    controller._wait_for_command = lambda: waits.append(controller.steps)  # type: ignore[method-assign]
    call(controller, torch.randn(1, 32), torch.randn(1, 32), dim=0)  # degenerate-dim: an error, it stops
    controller._outbox.flush()
    (step,) = channel.steps
    assert waits == [1] and step.paused
    assert step.projection is not None and step.projection.dim_size == 1
