"""Where the vectors came from, in real runs: the DataLoader batch and the training context
with forked workers (whose own calls must not become steps), and the labels of a recorded map.
What needs no child (a loader read ahead, a Trainer-style class, a dict-returning model, the
pictures of an eval-mode model's images, the labels of the live map) is checked in this
process, in ``tests/agent/test_training_inputs.py``."""

from __future__ import annotations

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


def labels_seen(output: str) -> list[list[int]]:
    """The labels of each batch, as ``labelled_loader.py`` printed them (``labels STEP l0 l1 ...``)."""
    return [[int(v) for v in line.split()[2:]] for line in output.splitlines() if line.startswith("labels ")]


def sides(projection: protocol.Projection | None) -> tuple[list[int], list[int]]:
    assert projection is not None and projection.label is not None
    anchors = [label for side, label in zip(projection.side, projection.label) if side == 0]
    partners = [label for side, label in zip(projection.side, projection.label) if side == 1]
    return anchors, partners


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
