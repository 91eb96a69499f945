"""The break condition and the input thumbnails, in process: what the expression can see, that
it cannot change the frame, that every failure is an error value and never an exception in the
script; that a thumbnail is a faithful small picture and touches nothing of the script's."""

from __future__ import annotations

import sys
import weakref

import pytest
import torch

import builders
from cossim_tui import protocol
from cossim_tui.agent.condition import BreakCondition, ConditionError
from cossim_tui.agent.provenance import MadeBy
from cossim_tui.agent.thumbnail import SIZE, Thumbnails, is_image_batch, thumbnail


def step(mean: float = 0.5, number: int = 7) -> protocol.StepCaptured:
    spread = protocol.Spread(1.0, 2.0, 3.0)
    arg = builders.tensor("z", (4, 8), norm=spread)
    cos = protocol.Similarity(count=4, min=mean - 0.1, mean=mean, max=mean + 0.1, first=[mean], angle_deg=spread)
    return builders.step(number, [arg, arg], at=builders.site("t.py", 1, "f"), cos=cos)


def test_the_summary_names_read_as_attributes():
    condition = BreakCondition()
    assert condition.set("cos.mean > 0.9 and args[1].norm.mean == 2.0 and step == 7") is None
    assert condition.holds(None, step(mean=0.95)) == "cos.mean > 0.9 and args[1].norm.mean == 2.0 and step == 7"
    assert condition.holds(None, step(mean=0.5)) is None


def test_the_frames_locals_and_globals_are_visible_and_cannot_be_changed():
    limit = 0.25
    values = [0.1, 0.3]  # noqa: F841 - read by the condition, through the frame
    frame = sys._getframe()
    condition = BreakCondition()
    # A generator expression sees the frame's locals too; the walrus lands in a copy.
    condition.set("any(v > limit for v in values) and (limit := 99) == 99 and torch.tensor(values).max() > 0.2")
    assert condition.holds(frame, step()) is not None
    assert limit == 0.25


def test_result_is_the_calls_return_value():
    condition = BreakCondition()
    condition.set("result.min() > 0.999")
    assert condition.holds(None, step(), result=torch.ones(3)) is not None
    assert condition.holds(None, step(), result=torch.zeros(3)) is None


def test_no_autograd_history_is_recorded():
    weight = torch.ones(3, requires_grad=True)  # noqa: F841 - read by the condition, through the frame
    frame = sys._getframe()
    condition = BreakCondition()
    condition.set("(seen := weight * 2) is not None and seen.grad_fn is None")
    assert condition.holds(frame, step()) is not None


def test_a_syntax_error_is_refused_and_clears_the_condition():
    condition = BreakCondition()
    condition.set("cos.mean > 0.5")
    error = condition.set("cos.mean >")
    assert error is not None and error.startswith("SyntaxError")
    assert condition.text == ""
    assert condition.holds(None, step()) is None


@pytest.mark.parametrize(
    ("text", "missing_name"),
    [("1 / 0", False), ("torch.ones(3) > 0", False), ("cos.nope", False), ("undefined_here", True)],
)
def test_errors_become_condition_errors(text, missing_name):
    condition = BreakCondition()
    condition.set(text)
    with pytest.raises(ConditionError) as caught:
        condition.holds(sys._getframe(), step())
    assert caught.value.missing_name is missing_name


def test_clear_if_leaves_a_newer_condition_alone():
    condition = BreakCondition()
    condition.set("a")
    condition.set("b")
    condition.clear_if("a")
    assert condition.text == "b"
    condition.clear_if("b")
    assert condition.text == ""


def test_an_empty_condition_clears():
    condition = BreakCondition()
    condition.set("step > 1")
    assert condition.set("   ") is None
    assert condition.text == ""


# --------------------------------------------------------------------------------------
# Thumbnails
# --------------------------------------------------------------------------------------


def test_only_image_batches_are_pictured():
    assert is_image_batch(torch.rand(2, 3, 8, 8))
    assert is_image_batch(torch.rand(2, 1, 8, 8))
    assert not is_image_batch(torch.rand(2, 4, 8, 8))  # four channels
    assert not is_image_batch(torch.rand(3, 8, 8))  # not a batch
    assert not is_image_batch(torch.randint(0, 255, (2, 3, 8, 8)))  # integers
    assert thumbnail(torch.rand(4, 16)) is None


def test_a_thumbnail_keeps_the_aspect_and_spans_the_full_range():
    batch = torch.rand(2, 3, 64, 32)
    picture = thumbnail(batch)
    assert picture is not None
    assert (picture.height, picture.width) == (SIZE, SIZE // 2)
    values = [v for row in picture.rows for pixel in row for v in pixel]
    assert min(values) == 0 and max(values) <= 255 and max(values) > 200
    small = thumbnail(torch.rand(1, 1, 5, 7))
    assert small is not None and (small.height, small.width) == (5, 7)  # never enlarged


def test_a_constant_or_non_finite_image_does_not_break_it():
    picture = thumbnail(torch.full((1, 3, 4, 4), float("nan")))
    assert picture is not None and picture.rows[0][0] == [128, 128, 128]


def test_a_thumbnail_changes_nothing_of_the_script():
    batch = torch.rand(2, 3, 40, 40, requires_grad=True)
    before = batch.detach().clone()
    state = torch.get_rng_state()
    thumbnail(batch)
    assert torch.equal(batch.detach(), before) and batch.grad is None
    assert torch.equal(torch.get_rng_state(), state)


def test_thumbnails_only_of_inputs_still_alive_and_once_per_call():
    images = torch.rand(2, 3, 8, 8)
    made = MadeBy(protocol.ModuleCall("CNN", 3, 0), weakref.ref(torch.nn.Identity()), weakref.ref(images))
    pictures = Thumbnails()
    first = pictures.of(made)
    assert first is not None
    assert pictures.of(made) is first  # drawn once per module call
    gone = torch.rand(2, 3, 8, 8)
    dead = MadeBy(protocol.ModuleCall("CNN", 4, 1), weakref.ref(torch.nn.Identity()), weakref.ref(gone))
    del gone
    assert pictures.of(dead) is None
    assert pictures.of(None) is None


def test_the_new_messages_cross_the_wire():
    for message in (
        protocol.SetBreak("cos.mean > 0.999"),
        protocol.BreakChanged(condition="", error="SyntaxError: invalid syntax", step=None),
    ):
        body = protocol.encode(message)[4:]
        assert protocol.decode_message(body) == message
    captured = step()
    captured.args[0].input_image = protocol.Thumbnail(1, 1, 1, [1, 1, 1, 1], [[[0, 0, 0]]])
    captured.args[1].from_loader = True
    captured.break_condition = "step == 7"
    assert protocol.decode_message(protocol.encode(captured)[4:]) == captured
