"""``--max-steps``: the child ends itself once it has reported that many steps, and what it
printed before is not lost. Stepping itself is checked in this process in
``tests/agent/test_stepping.py``; ending the process needs a real child."""

from __future__ import annotations

from cossim_tui.protocol import AgentConfig
from integration.live import FIXTURES

LOOP = FIXTURES / "cosine_loop.py"


def _numbers(steps):
    return [s.step for s in steps]


def test_max_steps_stops_the_script(start_run):
    live = start_run(LOOP, "--count", "10", config=AgentConfig(mode="run", max_steps=3))
    exited = live.wait_exit()

    assert exited.status == "stopped"
    assert exited.exit_code == 0
    assert _numbers(live.steps) == [0, 1, 2]
    assert "after call 3" not in live.output
    assert "before call 2\n" in live.output  # what it printed before stopping is not lost
    assert "loop done" not in live.output
