"""Stepping over the channel: where the script stops, and that it really waits there.

"Really waits" is checked the way a user would notice it: after a paused step, nothing more
arrives (no step, no output from after the call) until the script is told to go on. The script
runs in this process under the agent, driven over the channel as the launcher drives a child
(``agent_harness.ScriptThread``), so that "nothing more arrives" is checked once the script is
seen waiting for a command, not after a fixed time. ``--max-steps``, which ends the process, is
checked on a real child in ``tests/integration/test_max_steps.py``.
"""

from __future__ import annotations

from pathlib import Path

from cossim_tui import protocol
from cossim_tui.protocol import AgentConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOOP = FIXTURES / "cosine_loop.py"


def _numbers(steps):
    return [s.step for s in steps]


def test_step_mode_waits_at_every_call(start_script):
    live = start_script(LOOP, "--count", "4", config=AgentConfig(mode="step"))

    first = live.next_step()
    assert first.step == 0 and first.paused is True
    assert [a.expr for a in first.args] == ["anchor", "positive"]
    live.wait_output("before call 0\n", timeout=5)  # output before the call is shown while paused
    live.assert_no_step()
    assert "after call 0" not in live.output

    live.send(protocol.Resume("step"))
    second = live.next_step(timeout=10)
    assert second.step == 1 and second.paused is True
    live.wait_output("after call 0:", timeout=5)
    live.assert_no_step()

    live.send(protocol.Resume("run"))
    exited = live.wait_exit(timeout=20)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert _numbers(live.steps) == [0, 1, 2, 3]
    assert [s.paused for s in live.steps] == [True, True, False, False]
    assert live.output.endswith("loop done\n")


def test_continue_stops_only_at_an_error(start_script):
    live = start_script(FIXTURES / "break_on_error.py", config=AgentConfig(mode="continue", break_on=["error"]))

    stop = live.next_step()
    while not stop.paused:
        assert stop.step < 2, f"ran past the same-object call: {stop}"
        assert not any(f.severity == "error" for f in stop.findings)
        stop = live.next_step(timeout=20)
    assert stop.step == 2
    assert "same-object" in [f.code for f in stop.findings]
    assert [a.expr for a in stop.args] == ["embedding", "embedding"]
    live.assert_no_step()

    live.send(protocol.Resume("continue"))
    exited = live.wait_exit(timeout=20)
    assert (exited.status, exited.exit_code) == ("finished", 0)
    assert _numbers(live.steps) == [0, 1, 2, 3]
    assert [s.paused for s in live.steps] == [False, False, True, False]
    assert "break_on_error done" in live.output


def test_pause_while_running_stops_at_the_next_call(start_script):
    live = start_script(LOOP, "--count", "400", "--sleep", "0.1", config=AgentConfig(mode="run"))

    running = live.next_step()
    assert running.paused is False
    live.send(protocol.Pause())
    paused = live.next_step(timeout=10)
    while not paused.paused:  # calls already under way when Pause went out may still run through
        assert paused.step <= running.step + 5, "Pause did not take effect"
        paused = live.next_step(timeout=10)
    live.assert_no_step()

    live.send(protocol.Resume("step"))
    after = live.next_step(timeout=10)
    assert after.step == paused.step + 1 and after.paused is True
    assert _numbers(live.steps) == list(range(after.step + 1))
