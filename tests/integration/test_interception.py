"""DataLoader workers (forked children of the script) call cosine functions too: none of their
calls becomes a step. The entry points themselves are checked in this process, in
``tests/agent/test_interception.py``."""

from __future__ import annotations

from integration.live import FIXTURES


def test_dataloader_workers_do_not_report(start_run):
    live = start_run(FIXTURES / "dataloader_workers.py", "--batches", "3")
    exited = live.wait_exit()

    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    # Each worker calls F.cosine_similarity per sample (6 calls); only the main loop's 3 are steps.
    assert [s.step for s in live.steps] == [0, 1, 2]
    assert all([a.expr for a in s.args] == ["features", "torch.randn(2, 4)"] for s in live.steps)
    assert live.output.endswith("dataloader done\n")
