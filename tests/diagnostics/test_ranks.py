"""Judgement across a job's ranks (``diagnostics.ranks``), on built steps: no job needed."""

from __future__ import annotations

import msgspec.structs
from builders import rank_arg, rank_hello, rank_step, step, tensor

from cossim_tui import protocol
from cossim_tui.diagnostics.ranks import CrossRankJudge, equal_arguments


def test_equal_vectors_on_two_ranks_at_one_step_are_the_same_batch() -> None:
    judge = CrossRankJudge()
    assert judge.observe(rank_step(0, 0, 0.1)) == []
    found = judge.observe(rank_step(1, 0, 0.1))
    assert [(f.code, f.severity, f.ranks, f.step, f.evidence) for f in found] == [("same-batch-across-ranks", "error", [0, 1], 0, ["args.0"])]
    assert "anchor on rank 1 equals anchor on rank 0 at step 0" in found[0].message


def test_what_a_rank_s_channel_brings_carries_that_rank_and_its_steps_are_judged_across_ranks() -> None:
    """``arrived``: what the job's listener and a script's rank relay both do with each message a
    rank's channel brings, whatever rank the message itself claims."""
    judge = CrossRankJudge()
    hello, first, second = rank_hello(5), rank_step(7, 0, 0.1), rank_step(7, 0, 0.1)
    judge.arrived(hello, 0)
    judge.arrived(first, 0)
    judge.arrived(second, 1)
    assert (hello.rank, first.rank, second.rank) == (0, 0, 1)
    assert [f.code for f in first.findings] == []
    assert [(f.code, f.ranks) for f in second.findings] == [("same-batch-across-ranks", [0, 1])]
    resume = protocol.Resume(mode="run")
    judge.arrived(resume, 1)  # a command carries no rank
    assert not hasattr(resume, "rank")


def test_different_batches_or_different_steps_are_not() -> None:
    judge = CrossRankJudge()
    judge.observe(rank_step(0, 0, 0.1))
    assert judge.observe(rank_step(1, 0, 0.2)) == []  # another batch
    assert judge.observe(rank_step(1, 1, 0.1)) == []  # the same values at another step: not compared
    assert judge.observe(step(0, [rank_arg("anchor", 0.1)])) == []  # a single process has no rank


def test_constant_or_non_finite_vectors_say_nothing_about_the_data() -> None:
    judge = CrossRankJudge()
    zero = tensor("z", (8, 16), norm=protocol.Spread(min=0.0, mean=0.0, max=0.0), stats=protocol.ValueStats(min=0.0, max=0.0, mean=0.0, std=0.0))
    judge.observe(step(0, [zero, zero], rank=0))
    assert judge.observe(step(0, [zero, zero], rank=1)) == []
    nan = msgspec.structs.replace(rank_arg("n", 0.1), nan=3)
    judge.observe(step(1, [nan], rank=0))
    assert judge.observe(step(1, [nan], rank=1)) == []


def test_equal_arguments_names_which_sides_are_equal() -> None:
    a, b = rank_step(0, 3, 0.1), rank_step(1, 3, 0.1)
    assert equal_arguments(a, b) == [0, 1]
    b.args[1] = rank_arg("partner", 0.7)
    assert equal_arguments(a, b) == [0]
