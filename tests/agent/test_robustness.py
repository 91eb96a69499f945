"""Odd tensors (huge, expanded, meta, sparse, mismatched, integer, a leaf) are summarised
where they can be, and every call returns or raises exactly as under python (issue:
robustness). The script runs in this process, with and without the agent
(``agent_harness``); what needs real children is in ``tests/integration/test_robustness.py``."""

from __future__ import annotations

from pathlib import Path

from agent_harness import run_plain_here

from cossim_tui.protocol import AgentConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_odd_tensors_are_summarised_and_torch_decides(start_script) -> None:
    plain = run_plain_here(FIXTURES / "odd_tensors.py")
    live = start_script(FIXTURES / "odd_tensors.py", config=AgentConfig(mode="run"))
    exited = live.wait_exit(timeout=180)
    assert exited.status == "finished", live.output
    # Every call returned or raised exactly as under python.
    assert [line for line in live.output.splitlines() if " ok" in line or " raised" in line] == plain.splitlines()
    steps = live.steps
    assert len(steps) == len(plain.splitlines())
    by_case = dict(zip([line.split()[0] for line in plain.splitlines()], steps))
    assert by_case["large"].args[0].sampled and by_case["large"].cos is not None
    assert by_case["expanded"].args[0].storage.strides[0] == 0
    assert by_case["meta"].args[0].note and by_case["sparse"].args[0].note
    assert by_case["mismatched"].error and by_case["integer"].error
    assert by_case["leaf"].args[0].requires_grad and by_case["leaf"].args[0].is_leaf
