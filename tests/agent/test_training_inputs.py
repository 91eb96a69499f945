"""Where the vectors came from: the DataLoader batch a loader read ahead hands the step, a
Trainer-style class whose pair lives in attributes, a dict-returning model inside DataParallel,
the pictures of the images an eval-mode model was fed twice, and the labels of the batch each
vector of the embedding map was made from.

The scripts run in this process under the agent (``agent_harness``: ``run_script`` as ``check
--json`` makes its report, ``ScriptThread`` driven over the channel as a run is), without a
child importing torch for each. Loaders with forked workers, and a recorded trace, are checked
on real children in ``tests/integration/test_training_inputs.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from agent_harness import run_script

from cossim_tui import protocol
from cossim_tui.agent.transfer import HostTransfer
from cossim_tui.protocol import AgentConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPO = FIXTURES.parent.parent


def test_a_loader_read_one_batch_ahead_gives_the_batch_the_step_consumes(start_script):
    """accelerate (and so the HF Trainer) fetches the next batch before the step consumes the
    current one: the steps read batches 0, 1, 2, 3 of each epoch, not 1, 2, 3, 3, and the
    batch's tensors are recognised as the loader's."""
    live = start_script(FIXTURES / "prefetching_loader.py", config=AgentConfig(mode="run"))
    exited = live.wait_exit(timeout=60)
    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    steps = live.steps
    assert [(s.context["epoch"], s.context["batch"]) for s in steps] == [(e, b) for e in range(2) for b in range(4)]
    for step in steps:
        output, positive = step.args
        assert (output.expr, positive.expr) == ("model(anchor)", "positive")
        assert (output.from_loader, positive.from_loader) == (False, True)
        assert output.made_by is not None and output.made_by.module == "Linear"
    assert [s.args[0].made_by.call for s in steps] == list(range(8))
    assert "prefetching_loader done" in live.output


def test_the_same_sentences_through_a_dict_returning_model_are_identical_inputs():
    """sentence-transformers with the same sentence on both sides of every pair, dropout on: the
    vectors differ, their inputs do not. The model takes and returns a dict and sits inside
    DataParallel: made_by still names it, numbered by its own calls."""
    for same in (True, False):
        options = ["--same"] if same else []
        done = run_script(FIXTURES / "sentence_pairs.py", *options, cwd=REPO, fail_on="never", threads=None)
        assert done.returncode == 0, done.report
        calls = done.report["calls"]
        assert len(calls) == 3
        assert [["identical-inputs" in c["codes"]] for c in calls] == [[same]] * 3
        for number, call in enumerate(calls):
            made_by = [a["made_by"] for a in call["args"]]
            assert made_by == [
                {"module": "SentenceEncoder", "call": 2 * number, "step": number},
                {"module": "SentenceEncoder", "call": 2 * number + 1, "step": number},
            ]


def test_a_trainer_class_names_its_attributes_and_its_model():
    done = run_script(FIXTURES / "trainer_class.py", cwd=REPO, fail_on="never", threads=None)
    assert done.returncode == 0, done.report
    report = done.report
    calls = report["calls"]
    assert report["steps"] == 6  # self.cos and self.criterion, three batches
    assert [c["function"] for c in calls[:2]] == ["nn.CosineSimilarity", "nn.CosineEmbeddingLoss"]
    for call in calls:
        assert [a["expr"] for a in call["args"]] == ["z", "self.memory"]
        assert call["site"].startswith("tests/fixtures/trainer_class.py:")
        assert all(a["made_by"]["module"] == "Encoder" for a in call["args"])
    # Batch 2 (steps 2 and 3): z is made at step 2, the memory is batch 1's z, made at step 0.
    assert [a["made_by"]["step"] for a in calls[2]["args"]] == [2, 0]
    assert calls[2]["args"][1]["made_by"]["call"] == calls[0]["args"][0]["made_by"]["call"]
    assert "stale-partner" in calls[2]["codes"]
    assert "optimizer_steps" not in calls[1]["context"]  # no optimizer has stepped yet
    assert (calls[2]["context"]["optimizer_steps"], calls[2]["context"]["lr"]) == (1, 0.1)


def test_the_same_eval_input_twice_is_identical_inputs_with_both_pictures(start_script):
    live = start_script(FIXTURES / "eval_images.py", config=AgentConfig(mode="run"))
    exited = live.wait_exit(timeout=60)
    assert exited.status == "finished", live.output
    (step,) = live.steps
    assert "identical-inputs" in [f.code for f in step.findings]
    first, second = (arg.input_image for arg in step.args)
    assert first is not None and second is not None
    assert first.channels == 3 and first.source_shape == [2, 3, 40, 32]
    # At most 24 pixels a side, the 40x32 aspect kept.
    assert (first.height, first.width) == (24, 19)
    assert len(first.rows) == 24 and all(len(row) == 19 for row in first.rows)
    assert all(0 <= value <= 255 for row in first.rows for pixel in row for value in pixel)
    assert first.rows == second.rows  # equal images, equal pictures


def test_a_grey_batch_gives_a_grey_picture(start_script):
    live = start_script(FIXTURES / "eval_images.py", "--grey", config=AgentConfig(mode="run"))
    live.wait_exit(timeout=60)
    (step,) = live.steps
    picture = step.args[0].input_image
    assert picture is not None and picture.channels == 1
    assert all(r == g == b for row in picture.rows for r, g, b in row)


def labels_seen(output: str) -> list[list[int]]:
    """The labels of each batch, as ``labelled_loader.py`` printed them (``labels STEP l0 l1 ...``)."""
    return [[int(v) for v in line.split()[2:]] for line in output.splitlines() if line.startswith("labels ")]


def sides(projection: protocol.Projection | None) -> tuple[list[int], list[int]]:
    assert projection is not None and projection.label is not None
    anchors = [label for side, label in zip(projection.side, projection.label) if side == 0]
    partners = [label for side, label in zip(projection.side, projection.label) if side == 1]
    return anchors, partners


def test_the_embedding_map_labels_each_vector_with_its_own_batchs_labels(start_script):
    live = start_script(FIXTURES / "labelled_loader.py", "--batches", "6", config=AgentConfig(mode="step"))
    for _ in range(6):
        live.next_step()  # paused: every step has a map
        live.send(protocol.Resume("step"))
    exited = live.wait_exit(timeout=60)
    assert exited.status == "finished", live.output
    seen = labels_seen(live.output)
    assert len(seen) == 6 and all(len(batch) == 4 for batch in seen)
    for step in live.steps:
        anchors, partners = sides(step.projection)
        # The ring holds every row so far, oldest first. Each anchor was made from its step's
        # batch; each partner is the previous step's anchor (at step 0, the anchor itself).
        assert anchors == [label for batch in seen[: step.step + 1] for label in batch]
        assert partners == seen[0] + [label for batch in seen[: step.step] for label in batch]


def test_the_loss_and_a_tensor_learning_rate_are_their_exact_values(watched):
    """The context's loss is the last backward()'s loss, and a tensor learning rate its value, as
    Python floats exactly (float32, bfloat16, float64; a one-element loss of any shape)."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=torch.tensor(0.05, dtype=torch.float64))
    # The context's own hook, on this optimizer only (``watched`` registers none for all of them).
    optimizer.register_step_post_hook(watched.context._stepped)
    for steps, (dtype, shape) in enumerate(((torch.float32, ()), (torch.bfloat16, (1,)), (torch.float64, (1, 1))), start=1):
        loss = (weight * 0.05).sum().to(dtype).reshape(shape)
        loss.backward()
        optimizer.step()
        transfer = HostTransfer()
        snapshot = watched.context.queue_snapshot(transfer)
        transfer.fetch()
        assert snapshot() == {"loss": loss.item(), "lr": 0.05, "optimizer_steps": steps}
        assert snapshot()["loss"] != 0.1 or dtype == torch.float64  # its own rounding, not the literal's
