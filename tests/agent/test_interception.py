"""Every cosine entry point is intercepted, named by its source expressions, and left untouched.

``fixtures/entry_points.py`` runs once without the agent and once under it (shared by the tests
of this module), both in this process (``agent_harness``: the script as ``python`` and the
agent's child start it, with one torch thread); the results it saves must be equal bit for bit,
and the rejected calls must fail the same way in both. That DataLoader workers never report
needs forked children of a real run: ``tests/integration/test_interception.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from agent_harness import ScriptThread, run_plain_here

from cossim_tui.protocol import AgentConfig

# Its module-scoped fixtures run once for several tests: all of them on one worker (pyproject).
pytestmark = pytest.mark.xdist_group("test_interception")

ENTRY_POINTS = Path(__file__).resolve().parent.parent / "fixtures" / "entry_points.py"
SHAPE_ERROR = "RuntimeError: The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1"
DTYPE_ERROR = "RuntimeError: expected common dtype to be floating point, yet common dtype is Long"


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """(plain python output, plain results, agent run, agent results)."""
    where = tmp_path_factory.mktemp("entry_points")
    plain_pt, agent_pt = where / "plain.pt", where / "agent.pt"
    plain_output = run_plain_here(ENTRY_POINTS, str(plain_pt))

    live = ScriptThread(ENTRY_POINTS, (str(agent_pt),), AgentConfig(mode="run"), cwd=where)
    try:
        exited = live.wait_exit()
    finally:
        live.stop()
    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    return plain_output, torch.load(plain_pt), live, torch.load(agent_pt)


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


def test_scripted_functions_that_call_intercepted_functions_still_compile():
    """TorchScript compiles F.cosine_similarity, F.normalize and F.cosine_embedding_loss inside a
    scripted function as it does under python (they run there unseen); the eager calls are steps."""
    script = ENTRY_POINTS.parent / "scripted_calls.py"
    plain_output = run_plain_here(script)
    live = ScriptThread(script, (), AgentConfig(mode="run"))
    try:
        exited = live.wait_exit()
    finally:
        live.stop()
    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    assert [line for line in live.output.splitlines() if line.startswith(("scripted", "eager"))] == plain_output.splitlines()
    assert [step.function for step in live.steps] == ["cosine_similarity", "cosine_embedding_loss"]
