"""Where the vectors came from, in real runs: the DataLoader batch and the training context
(with forked workers), a Trainer-style class whose pair lives in attributes, the pictures
of the images an eval-mode model was fed twice, and the labels of the batch each vector of the
embedding map was made from."""

from __future__ import annotations

import json

from cossim_tui import protocol
from cossim_tui.protocol import AgentConfig
from cossim_tui.session.replay import read_trace
from integration.live import FIXTURES, run_check


def test_a_loader_with_workers_gives_epoch_batch_loss_and_lr_and_no_worker_steps(start_run):
    live = start_run(FIXTURES / "loader_context.py", "--batches", "3", "--epochs", "2", config=AgentConfig(mode="run"))
    exited = live.wait_exit(timeout=60)
    assert (exited.status, exited.exit_code) == ("finished", 0), live.output
    steps = live.steps
    # Each worker calls F.cosine_similarity per item; only the main loop's six calls are steps.
    assert [s.step for s in steps] == list(range(6))
    assert [(s.context["epoch"], s.context["batch"]) for s in steps] == [(e, b) for e in range(2) for b in range(3)]
    assert "loss" not in steps[0].context and "lr" not in steps[0].context  # no backward() yet
    for step in steps[1:]:
        assert isinstance(step.context["loss"], float)
        assert step.context["lr"] == 0.05
    assert [s.context["optimizer_steps"] for s in steps[1:]] == [1, 2, 3, 4, 5]
    for step in steps:
        model_output, targets = step.args
        assert (model_output.expr, targets.expr) == ("model(features)", "targets")
        assert (model_output.from_loader, targets.from_loader) == (False, True)
        assert model_output.made_by is not None and model_output.made_by.module == "Linear"
        assert model_output.input_image is None  # 2-D features are not images
    assert live.output.count("loss") == 6 and "loader_context done" in live.output


def test_a_loader_read_one_batch_ahead_gives_the_batch_the_step_consumes(start_run):
    """accelerate (and so the HF Trainer) fetches the next batch before the step consumes the
    current one: the steps read batches 0, 1, 2, 3 of each epoch, not 1, 2, 3, 3, and the
    batch's tensors are recognised as the loader's."""
    live = start_run(FIXTURES / "prefetching_loader.py", config=AgentConfig(mode="run"))
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


def test_the_same_sentences_through_a_dict_returning_model_are_identical_inputs(tmp_path):
    """sentence-transformers with the same sentence on both sides of every pair, dropout on: the
    vectors differ, their inputs do not. The model takes and returns a dict and sits inside
    DataParallel: made_by still names it, numbered by its own calls."""
    for same in (True, False):
        report_path = tmp_path / "report.json"
        options = ["--same"] if same else []
        done = run_check("--json", str(report_path), "--fail-on", "never", str(FIXTURES / "sentence_pairs.py"), *options)
        assert done.returncode == 0, done.stdout + done.stderr
        calls = json.loads(report_path.read_text())["calls"]
        assert len(calls) == 3
        assert [["identical-inputs" in c["codes"]] for c in calls] == [[same]] * 3
        for number, call in enumerate(calls):
            made_by = [a["made_by"] for a in call["args"]]
            assert made_by == [
                {"module": "SentenceEncoder", "call": 2 * number, "step": number},
                {"module": "SentenceEncoder", "call": 2 * number + 1, "step": number},
            ]


def test_a_trainer_class_names_its_attributes_and_its_model(tmp_path):
    report_path = tmp_path / "report.json"
    done = run_check("--json", str(report_path), "--fail-on", "never", str(FIXTURES / "trainer_class.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
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


def test_the_same_eval_input_twice_is_identical_inputs_with_both_pictures(start_run):
    live = start_run(FIXTURES / "eval_images.py", config=AgentConfig(mode="run"))
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


def test_a_grey_batch_gives_a_grey_picture(start_run):
    live = start_run(FIXTURES / "eval_images.py", "--grey", config=AgentConfig(mode="run"))
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


def test_the_embedding_map_labels_each_vector_with_its_own_batchs_labels(start_run):
    live = start_run(FIXTURES / "labelled_loader.py", "--batches", "6", config=AgentConfig(mode="step"))
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


def test_a_recorded_map_carries_the_labels(tmp_path):
    trace_path = tmp_path / "labelled.jsonl"
    done = run_check("--record", str(trace_path), "--fail-on", "never", str(FIXTURES / "labelled_loader.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    seen = labels_seen(done.stdout)
    maps = [step.projection for step in read_trace(trace_path).steps if step.projection is not None]
    assert maps, "the first step always has a map"
    for projection in maps:
        anchors, partners = sides(projection)
        # Which steps between the first and the last fed the ring is the agent's pacing; the
        # rows of the newest and the oldest are there, each with its own batch's labels.
        assert anchors[-4:] == seen[projection.step] and anchors[:4] == seen[projection.first_step]
        assert partners[-4:] == seen[max(projection.step - 1, 0)]
        assert all(anchors[i : i + 4] in seen for i in range(0, len(anchors), 4))
