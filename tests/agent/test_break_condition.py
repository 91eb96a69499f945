"""The break condition over the channel: ``continue`` stops where the user's expression
holds, evaluated in the call's frame or over the step's summary; a broken condition is
reported, stops at most once, and never reaches the script.

The script runs in this process under the agent, driven over the channel as the launcher drives
a child (``agent_harness.ScriptThread``): what the agent does with the commands is the same,
without a child importing torch for each test."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_harness import run_plain_here

from cossim_tui import protocol
from cossim_tui.protocol import AgentConfig

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "break_condition.py"
CLOSE_AT = 5
STEPS = 8


def _break_changed(live, timeout: float = 10) -> protocol.BreakChanged:
    while True:
        event = live.next_event(timeout)
        if isinstance(event, protocol.BreakChanged):
            return event


def _start_paused_with(start_script, condition: str):
    """The script paused at step 0, with ``condition`` set; the agent's answer."""
    live = start_script(SCRIPT, config=AgentConfig(mode="step"))
    first = live.next_step()
    assert first.step == 0 and first.paused
    live.send(protocol.SetBreak(condition))
    return live, _break_changed(live)


def _plain_output() -> str:
    return run_plain_here(SCRIPT)


@pytest.mark.parametrize(
    ("condition", "stop_at"),
    [
        ("(positive - anchor).abs().max() < 0.01", CLOSE_AT),  # the frame's locals
        ("cos.mean > 0.999", CLOSE_AT),  # the step's summary
        ("result.min() > 0.999 and args[0].norm.mean > 0 and step > 0", CLOSE_AT),  # the call's result, the arguments
        # As in a debugger: while the call runs, ``similarity`` still holds the previous step's result.
        ("similarity.min() > 0.999", CLOSE_AT + 1),
    ],
)
def test_continue_stops_where_the_condition_holds(start_script, condition, stop_at):
    live, answer = _start_paused_with(start_script, condition)
    assert (answer.condition, answer.error) == (condition, None)

    live.send(protocol.Resume("continue"))
    stop = live.next_step(timeout=20)
    while not stop.paused:
        assert stop.step < stop_at, f"ran past the step where the condition holds: {stop.step}"
        assert stop.break_condition is None
        stop = live.next_step(timeout=20)
    assert stop.step == stop_at
    assert stop.break_condition == condition

    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=30)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert [s.paused for s in live.steps] == [i in (0, stop_at) for i in range(STEPS)]


def test_run_ignores_the_condition(start_script):
    live, _ = _start_paused_with(start_script, "cos.mean > 0.999")
    live.send(protocol.Resume("run"))
    exited = live.wait_exit(timeout=30)
    assert exited.status == "finished"
    assert [s.paused for s in live.steps] == [True] + [False] * (STEPS - 1)


def test_an_empty_condition_clears_it(start_script):
    live, _ = _start_paused_with(start_script, "cos.mean > 0.999")
    live.send(protocol.SetBreak(""))
    assert _break_changed(live) == protocol.BreakChanged(condition="", error=None)
    live.send(protocol.Resume("continue"))
    live.wait_exit(timeout=30)
    assert [s.paused for s in live.steps] == [True] + [False] * (STEPS - 1)


def test_a_syntax_error_is_reported_and_nothing_stops(start_script):
    live, answer = _start_paused_with(start_script, "cos.mean >")
    assert answer.condition == ""
    assert answer.error is not None and answer.error.startswith("SyntaxError")

    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=30)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert [s.paused for s in live.steps] == [True] + [False] * (STEPS - 1)
    assert live.output.replace("\r", "") == _plain_output()


def test_a_failing_condition_stops_once_is_turned_off_and_the_script_is_unaffected(start_script):
    # A tensor of four similarities has no single truth value: torch raises at every call.
    live, answer = _start_paused_with(start_script, "result > 0.999")
    assert answer.error is None  # it compiles; it fails only when evaluated

    live.send(protocol.Resume("continue"))
    failed = _break_changed(live, timeout=20)
    assert failed.condition == ""
    assert failed.step == 1
    assert failed.error is not None and "RuntimeError" in failed.error and "turned off" in failed.error
    stop = live.next_step(timeout=20)
    assert (stop.step, stop.paused, stop.break_condition) == (1, True, None)

    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=30)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert [s.paused for s in live.steps] == [True, True] + [False] * (STEPS - 2)
    assert not [e for e in live.events[1:] if isinstance(e, protocol.BreakChanged) and e.error and e is not failed]
    assert live.output.replace("\r", "") == _plain_output()


def test_the_condition_cannot_change_the_script(start_script):
    # An assignment lands in a copy of the frame's names: the loop's ``i`` stays the loop's.
    live, _ = _start_paused_with(start_script, "(i := 1000) < 0 or [anchor.mul_(1)] is None")
    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=30)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert live.output.replace("\r", "") == _plain_output()


def test_a_name_the_frame_lacks_is_false_reported_once_and_stays_set(start_script):
    live, _ = _start_paused_with(start_script, "not_defined_here > 0")
    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=30)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert [s.paused for s in live.steps] == [True] + [False] * (STEPS - 1)
    reports = [e for e in live.events if isinstance(e, protocol.BreakChanged) and e.error]
    assert len(reports) == 1
    assert reports[0].condition == "not_defined_here > 0" and reports[0].step == 1
    assert "NameError" in reports[0].error
