"""A job's ranks, judged and shown, without a job: the cross-rank judge on built steps, and the
TUI's per-rank models (``tui.ranks.JobView``) and the app routing each rank's events (Pilot)."""

from __future__ import annotations

import msgspec.structs

from builders import step, tensor
from cossim_tui import protocol
from cossim_tui.diagnostics.ranks import CrossRankJudge, equal_arguments
from cossim_tui.session.events import RankLost, ScriptExited
from cossim_tui.tui.ranks import JobView


def _arg(expr: str, mean: float, first: float = 0.5) -> protocol.TensorSummary:
    return tensor(
        expr, (8, 16), grad_fn="AddmmBackward0",
        norm=protocol.Spread(min=0.5, mean=1.0, max=1.5),
        stats=protocol.ValueStats(min=-1.0, max=1.0, mean=mean, std=0.3),
        preview=[first, 0.25, -0.125],
    )


def _rank_step(rank: int, number: int, mean: float, *, paused: bool = False) -> protocol.StepCaptured:
    return step(number, [_arg("anchor", mean), _arg("partner", -mean)], rank=rank, paused=paused)


# -- the judge across ranks --------------------------------------------------------------


def test_equal_vectors_on_two_ranks_at_one_step_are_the_same_batch() -> None:
    judge = CrossRankJudge()
    assert judge.observe(_rank_step(0, 0, 0.1)) == []
    found = judge.observe(_rank_step(1, 0, 0.1))
    assert [(f.code, f.severity, f.ranks, f.step, f.evidence) for f in found] == [("same-batch-across-ranks", "error", [0, 1], 0, ["args.0"])]
    assert "anchor on rank 1 equals anchor on rank 0 at step 0" in found[0].message


def test_different_batches_or_different_steps_are_not() -> None:
    judge = CrossRankJudge()
    judge.observe(_rank_step(0, 0, 0.1))
    assert judge.observe(_rank_step(1, 0, 0.2)) == []  # another batch
    assert judge.observe(_rank_step(1, 1, 0.1)) == []  # the same values at another step: not compared
    assert judge.observe(step(0, [_arg("anchor", 0.1)])) == []  # a single process has no rank


def test_constant_or_non_finite_vectors_say_nothing_about_the_data() -> None:
    judge = CrossRankJudge()
    zero = tensor("z", (8, 16), norm=protocol.Spread(min=0.0, mean=0.0, max=0.0), stats=protocol.ValueStats(min=0.0, max=0.0, mean=0.0, std=0.0))
    judge.observe(step(0, [zero, zero], rank=0))
    assert judge.observe(step(0, [zero, zero], rank=1)) == []
    nan = msgspec.structs.replace(_arg("n", 0.1), nan=3)
    judge.observe(step(1, [nan], rank=0))
    assert judge.observe(step(1, [nan], rank=1)) == []


def test_equal_arguments_names_which_sides_are_equal() -> None:
    a, b = _rank_step(0, 3, 0.1), _rank_step(1, 3, 0.1)
    assert equal_arguments(a, b) == [0, 1]
    b.args[1] = _arg("partner", 0.7)
    assert equal_arguments(a, b) == [0]


# -- the TUI's model of the ranks ---------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _hello(rank: int) -> protocol.Hello:
    return protocol.Hello(pid=1, python="3.11", target="train.py", argv=["train.py"], rank=rank, world_size=2, host="node")


def test_each_rank_has_its_own_model_and_state() -> None:
    clock = _Clock()
    job = JobView(clock)
    for rank in (1, 0):
        job.hello(_hello(rank))
    assert job.world_size == 2 and sorted(job.models) == [0, 1]
    assert job.shown == 1  # the first to say hello, until the app shows rank 0 (rank_actions)
    zero, one = job.models[0], job.models[1]
    zero.phase = zero.steps_arrived((_rank_step(0, 0, 0.1, paused=True),))[0]
    one.phase = one.steps_arrived((_rank_step(1, 0, 0.2),))[0]
    assert job.state(0) == "paused at step 0"
    assert job.state(1) == "running, step 0"
    clock.now += 2  # rank 1 says nothing while rank 0 is paused: it waits in a collective
    assert job.state(1) == "waiting for rank 0"
    assert job.step(1) == 0 and job.step(-1) == 0


def test_a_lost_rank_and_the_end_of_the_job() -> None:
    job = JobView(_Clock())
    for rank in (0, 1):
        job.hello(_hello(rank))
    job.models[0].script_finished(protocol.ScriptEnded(status="finished", exit_code=0, exception=None, rank=0))
    job.rank_lost(RankLost(1, "node"))
    assert job.state(0) == "finished" and job.state(1) == "lost"
    job.ended(ScriptExited("killed", None, None, "rank 1 ended without finishing"))
    assert job.models[0].phase == "ended" and job.models[1].phase == "failed"
    assert [(rank, state) for rank, state, _ in job.summary()] == [(0, "finished"), (1, "lost")]
