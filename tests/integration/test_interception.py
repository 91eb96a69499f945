"""Every cosine entry point is intercepted, named by its source expressions, and left untouched.

``fixtures/entry_points.py`` runs once under plain python and once under the agent (shared
by the tests of this module: each run imports torch); the results it saves must be equal
bit for bit, and the rejected calls must fail the same way in both.
"""

from __future__ import annotations

import pytest
import torch

from cossim_tui.launcher import Run
from cossim_tui.session.events import Target
from cossim_tui.protocol import AgentConfig
from integration.live import FIXTURES, LiveRun, run_plain

ENTRY_POINTS = FIXTURES / "entry_points.py"
SHAPE_ERROR = "RuntimeError: The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1"
DTYPE_ERROR = "RuntimeError: expected common dtype to be floating point, yet common dtype is Long"


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """(plain python output, plain results, agent run, agent results)."""
    where = tmp_path_factory.mktemp("entry_points")
    plain_pt, agent_pt = where / "plain.pt", where / "agent.pt"
    plain = run_plain([str(ENTRY_POINTS), str(plain_pt)], cwd=where)
    assert plain.returncode == 0, plain.stdout

    live = LiveRun(Run(Target(script=str(ENTRY_POINTS), args=[str(agent_pt)]), AgentConfig(mode="run"), cwd=str(where)))
    try:
        exited = live.wait_exit()
    finally:
        live.run.terminate()
    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    return plain.stdout, torch.load(plain_pt), live, torch.load(agent_pt)


@pytest.fixture(scope="module")
def steps(both_runs):
    return both_runs[2].steps


EXPECTED = [
    # (function reported, expressions) in call order
    ("cosine_similarity", ["anchor", "positive"]),
    ("cosine_similarity", ["query", "key"]),  # torch.cosine_similarity
    ("cosine_similarity", ["left", "right"]),  # the alias cs
    ("nn.CosineSimilarity", ["first", "second"]),
    ("cosine_embedding_loss", ["input_a", "input_b"]),
    ("nn.CosineEmbeddingLoss", ["emb_a", "emb_b"]),
    ("cosine_similarity", ["thread_x", "thread_y"]),  # from a non-main thread
    ("cosine_similarity", ["narrow", "wide"]),
    ("cosine_similarity", ["counts_a", "counts_b"]),
]


def test_every_entry_point_is_one_step_named_by_its_source(steps):
    assert [s.step for s in steps] == list(range(len(EXPECTED)))
    assert [(s.function, [a.expr for a in s.args]) for s in steps] == EXPECTED
    assert all(s.site.path.endswith("entry_points.py") for s in steps)
    # The line is the user's call, not torch's module forward.
    source = ENTRY_POINTS.read_text().splitlines()
    for step, (_, exprs) in zip(steps, EXPECTED):
        assert exprs[0] in source[step.site.line - 1], (step.site.line, source[step.site.line - 1])


def test_dims_and_similarities_are_reported(steps):
    assert steps[2].relation is not None and steps[2].relation.dim_size == 4  # cs(left, right, dim=-1)
    assert steps[3].relation is not None and steps[3].relation.dim_size == 8  # nn.CosineSimilarity(dim=1)
    for step in steps[:7]:
        assert step.error is None
        assert step.cos is not None and -1.0 <= step.cos.min <= step.cos.max <= 1.0


def test_results_are_bit_identical_to_plain_python(both_runs):
    _, plain, _, agent = both_runs
    assert plain.keys() == agent.keys()
    assert set(agent) == {"functional", "anchor_grad", "torch", "alias", "module", "loss", "loss_module", "thread"}
    for key in plain:
        assert torch.equal(agent[key], plain[key]), key
        assert agent[key].dtype == plain[key].dtype


def test_rejected_calls_raise_the_same_in_the_script(both_runs, steps):
    plain_output, _, live, _ = both_runs
    assert live.output == plain_output
    assert f"{SHAPE_ERROR}\n{DTYPE_ERROR}\nentry points done\n" == live.output
    assert steps[7].error == SHAPE_ERROR
    assert steps[8].error == DTYPE_ERROR


def test_dataloader_workers_do_not_report(start_run):
    live = start_run(FIXTURES / "dataloader_workers.py", "--batches", "3")
    exited = live.wait_exit()

    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    # Each worker calls F.cosine_similarity per sample (6 calls); only the main loop's 3 are steps.
    assert [s.step for s in live.steps] == [0, 1, 2]
    assert all([a.expr for a in s.args] == ["features", "torch.randn(2, 4)"] for s in live.steps)
    assert live.output.endswith("dataloader done\n")
