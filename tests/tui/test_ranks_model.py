"""The TUI's model of a job's ranks (``tui.ranks.JobView``): plain Python, no Pilot."""

from __future__ import annotations

from builders import rank_hello, rank_step

from cossim_tui import protocol
from cossim_tui.session.events import RankLost, ScriptExited
from cossim_tui.tui.ranks import JobView


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_rank_has_its_own_model_and_state() -> None:
    clock = _Clock()
    job = JobView(clock)
    for rank in (1, 0):
        job.hello(rank_hello(rank))
    assert job.world_size == 2 and sorted(job.models) == [0, 1]
    assert job.shown == 1  # the first to say hello, until the app shows rank 0 (rank_actions)
    zero, one = job.models[0], job.models[1]
    zero.phase = zero.steps_arrived((rank_step(0, 0, 0.1, paused=True),))[0]
    one.phase = one.steps_arrived((rank_step(1, 0, 0.2),))[0]
    assert job.state(0) == "paused at step 0"
    assert job.state(1) == "running, step 0"
    clock.now += 2  # rank 1 says nothing while rank 0 is paused: it waits in a collective
    assert job.state(1) == "waiting for rank 0"
    assert job.step(1) == 0 and job.step(-1) == 0


def test_a_lost_rank_and_the_end_of_the_job() -> None:
    job = JobView(_Clock())
    for rank in (0, 1):
        job.hello(rank_hello(rank))
    job.models[0].script_finished(protocol.ScriptEnded(status="finished", exit_code=0, exception=None, rank=0))
    job.rank_lost(RankLost(1, "node"))
    assert job.state(0) == "finished" and job.state(1) == "lost"
    job.ended(ScriptExited("killed", None, None, "rank 1 ended without finishing"))
    assert job.models[0].phase == "ended" and job.models[1].phase == "failed"
    assert [(rank, state) for rank, state, _ in job.summary()] == [(0, "finished"), (1, "lost")]
