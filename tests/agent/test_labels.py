"""The embedding map knows each point's class: the DataLoader's labels follow the rows they
label, from the batch, through the module call that made the vectors (even when a vector is
reused as a stale partner steps later), into the map's ring and onto the wire. Where the labels
cannot be matched to rows one to one, the points are unlabelled rather than mislabelled.

The context and provenance are installed in this process as the agent installs them; the
patched torch entry points are put back after each test.
"""

from __future__ import annotations

import base64
import json
import struct

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import builders
from cossim_tui import protocol
from cossim_tui.agent.projection import ROWS_PER_CALL, ProjectionMaps


def image_loader(batches: int = 2, size: int = 4, label_dtype: torch.dtype = torch.int64) -> DataLoader:
    images = torch.randn(batches * size, 3, 4, 4)
    labels = torch.randint(0, 5, (batches * size,)).to(label_dtype)
    return DataLoader(TensorDataset(images, labels), batch_size=size)


def one_batch(batch: object) -> DataLoader:
    """A loader that yields exactly ``batch``, as a custom ``collate_fn`` may."""
    return DataLoader(range(1), batch_size=1, collate_fn=lambda _: batch)


def model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8))


# --------------------------------------------------------------------------------------
# The batch's labels
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_an_integer_vector_as_long_as_the_batch_labels_its_data_and_views_of_it(watched, dtype):
    images, labels = next(iter(image_loader(label_dtype=dtype)))
    context = watched.context
    assert context.labels_of(images) is labels
    assert context.labels_of(images.flatten(1)) is labels
    assert context.labels_of(images.detach()) is labels
    assert context.labels_of(images[1:]) is None, "3 rows cannot take 4 labels"
    assert context.labels_of(torch.randn(4, 48)) is None, "not the batch"
    assert context.labels_of(labels) is None, "the labels are not data"


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(lambda images: (images, images.sum((1, 2, 3))), id="float-targets"),
        pytest.param(lambda images: (images, torch.ones(4, dtype=torch.bool)), id="bool-mask"),
        pytest.param(lambda images: (images, torch.arange(3)), id="fewer-labels-than-rows"),
        pytest.param(lambda images: (images, torch.zeros(4, 2, dtype=torch.int64)), id="2-d-integers"),
        pytest.param(lambda images: images, id="images-only"),
    ],
)
def test_a_batch_without_a_label_vector_of_its_length_labels_nothing(watched, batch):
    images = torch.randn(4, 3, 4, 4)
    list(one_batch(batch(images)))
    assert watched.context.labels_of(images) is None


def test_dict_batches_and_several_inputs_are_labelled_too(watched):
    first, second, labels = torch.randn(4, 8), torch.randn(4, 3, 2, 2), torch.tensor([3, 1, 4, 1])
    list(one_batch({"anchor": first, "positive": second, "label": labels}))
    assert watched.context.labels_of(first) is labels
    assert watched.context.labels_of(second) is labels


def test_pairs_of_inputs_each_with_its_own_labels_take_their_own(watched):
    image1, label1 = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    image2, label2 = torch.randn(4, 3, 2, 2), torch.tensor([3, 2, 1, 0])
    list(one_batch((image1, label1, image2, label2)))
    assert watched.context.labels_of(image1) is label1
    assert watched.context.labels_of(image2) is label2
    list(one_batch({"label1": label1, "image1": image1, "image2": image2, "label2": label2}))
    assert watched.context.labels_of(image1) is label2, "the labels after it in the batch"
    assert watched.context.labels_of(image2) is label2


def test_only_the_last_batch_is_known(watched):
    iterator = iter(image_loader())
    images, _ = next(iterator)
    next(iterator)
    assert watched.context.labels_of(images) is None


# --------------------------------------------------------------------------------------
# The module call that made a vector
# --------------------------------------------------------------------------------------


def test_a_vector_keeps_its_own_batchs_labels_as_a_stale_partner(watched):
    net = model()
    partner = None
    seen = []
    for images, labels in image_loader(batches=3):
        anchor = net(images)
        made = watched.provenance.made_by(anchor)
        assert made is not None and made.labels is labels
        if partner is not None:
            stale = watched.provenance.made_by(partner)
            assert stale is not None and stale.labels is seen[-1], "the partner's batch, not this one"
        seen.append(labels)
        partner = anchor.detach()
        watched.step += 1


def test_a_module_fed_anything_but_the_labelled_batch_has_no_labels(watched):
    net = model()
    images, _ = next(iter(image_loader()))
    made = [watched.provenance.made_by(net(x)) for x in (torch.randn(4, 3, 4, 4), images[:2], images.clone())]
    assert [m.labels if m is not None else "not recorded" for m in made] == [None, None, None]
    list(one_batch((images, images.mean((1, 2, 3)))))  # the next batch has no labels
    made_now = watched.provenance.made_by(net(images))
    assert made_now is not None and made_now.labels is None


# --------------------------------------------------------------------------------------
# The map's ring
# --------------------------------------------------------------------------------------


def rows_of(ids: list[int], width: int = 16) -> torch.Tensor:
    """One fixed random row per id: equal ids, equal rows."""
    return torch.stack([torch.randn(width, generator=torch.Generator().manual_seed(i)) for i in ids])


def test_labels_follow_their_rows_on_both_sides():
    maps = ProjectionMaps()
    first, second = torch.tensor([0, 1, 2, 3]), torch.tensor([7, 7, 5, 6], dtype=torch.uint8)
    projection = maps.observe(0, "s", torch.randn(4, 16), torch.randn(4, 16), -1, force=True, labels=(first, second))
    assert projection is not None
    assert projection.side == [0] * 4 + [1] * 4
    assert projection.label == [0, 1, 2, 3, 7, 7, 5, 6]


def test_a_call_adds_as_many_labels_as_rows():
    labels = torch.arange(40)
    projection = ProjectionMaps().observe(0, "s", torch.randn(40, 16), torch.randn(40, 16), -1, force=True, labels=(labels, None))
    assert projection is not None
    assert projection.label == list(range(ROWS_PER_CALL)) + [-1] * ROWS_PER_CALL


def test_the_label_ring_wraps_with_the_row_ring():
    maps = ProjectionMaps(rows_per_side=8)
    projection = None
    for step in range(10):
        ids = list(range(5 * step, 5 * step + 5))
        backwards = ids[::-1]
        projection = maps.observe(
            step, "s", rows_of(ids), rows_of(backwards), -1, force=step == 9, labels=(torch.tensor(ids), torch.tensor(backwards))
        )
    assert projection is not None and projection.label is not None
    points = list(zip(projection.side, projection.label, projection.x, projection.y))
    # The last 8 rows written on each side: x2 got step 8's ids backwards, so 40 and 41 are its last.
    assert sorted(label for side, label, _, _ in points if side == 0) == list(range(42, 50))
    assert sorted(label for side, label, _, _ in points if side == 1) == [40, 41, 42, 45, 46, 47, 48, 49]
    # Equal rows project to equal points: each label still names its own row after the wrap.
    where = {(side, label): (x, y) for side, label, x, y in points}
    for label in (42, 45, 46, 47, 48, 49):
        assert where[0, label] == pytest.approx(where[1, label], abs=1e-3)


@pytest.mark.parametrize(
    "x, labels, dim",
    [
        pytest.param(torch.randn(4, 3, 16), torch.arange(4), -1, id="more-rows-than-labels"),
        pytest.param(torch.randn(8, 8), torch.arange(8), 0, id="reduced-over-the-batch"),
        pytest.param(torch.randn(4, 16), torch.arange(5), -1, id="more-labels-than-rows"),
        pytest.param(torch.randn(4, 16), torch.rand(4), -1, id="float-labels"),
        pytest.param(torch.randn(4, 16), torch.tensor([-1, -100, -1, -5]), -1, id="only-negative-labels"),
    ],
)
def test_labels_that_do_not_name_the_rows_one_to_one_label_nothing(x, labels, dim):
    projection = ProjectionMaps().observe(0, "s", x, x.clone(), dim, force=True, labels=(labels, labels))
    assert projection is not None and projection.label is None


def test_rows_without_labels_are_unknown_beside_labelled_ones():
    maps = ProjectionMaps()
    maps.observe(0, "s", torch.randn(2, 16), torch.randn(2, 16), -1)
    projection = maps.observe(1, "s", torch.randn(2, 16), torch.randn(2, 16), -1, force=True, labels=(torch.tensor([4, -100]), None))
    assert projection is not None
    assert projection.label == [-1, -1, 4, -1, -1, -1, -1, -1]


def test_a_row_without_labels_written_over_a_labelled_one_is_unknown():
    maps = ProjectionMaps(rows_per_side=4)
    maps.observe(0, "s", torch.randn(4, 16), torch.randn(4, 16), -1, labels=(torch.tensor([1, 2, 3, 4]), None))
    projection = maps.observe(1, "s", torch.randn(2, 16), torch.randn(2, 16), -1, force=True)
    assert projection is not None
    assert projection.label == [-1, -1, 3, 4, -1, -1, -1, -1]


def test_the_labels_are_read_in_the_maps_one_transfer(monkeypatch):
    reads: list[str] = []

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            reads.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in ("tolist", "item", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    maps = ProjectionMaps(every=4)
    labels = torch.arange(4)
    for step in range(4):
        maps.observe(step, "s", torch.randn(4, 16), torch.randn(4, 16), -1, labels=(labels, labels))
    assert reads == ["tolist"], "one read, for the map at step 0; none while rows are only kept"


def test_a_labelled_map_crosses_the_channel():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 200])
    projection = ProjectionMaps().observe(0, "s", torch.randn(8, 16), torch.randn(8, 16), -1, force=True, labels=(labels, None))
    assert projection is not None and projection.label == list(range(7)) + [200] + [-1] * 8
    step = step_with(projection)
    assert protocol.decode_message(protocol.encode(step)[4:]) == step


# --------------------------------------------------------------------------------------
# On the wire
# --------------------------------------------------------------------------------------


def step_with(projection: protocol.Projection) -> protocol.StepCaptured:
    return builders.step(3, paused=True, projection=projection)


def labelled_projection(label: list[int] | None) -> protocol.Projection:
    count = 2 if label is None else len(label)
    return protocol.Projection(
        step=3, first_step=0, x=[0.5] * count, y=[-0.25] * count, side=[i % 2 for i in range(count)],
        explained=[0.5, 0.25], spread=1.0, extent=0.5, dim_size=16, label=label,
    )


@pytest.mark.parametrize(
    "label",
    [
        pytest.param([3, -1], id="short"),
        pytest.param([0, 1, 2, 3, 4, 5, 6, 7, 255], id="packed-u8"),
        pytest.param([-1, 0, 1, 2, 3, 4, 5, 6, 2**40], id="packed-i64"),
        pytest.param(None, id="none"),
    ],
)
def test_labels_round_trip(label):
    step = step_with(labelled_projection(label))
    assert protocol.decode_message(protocol.encode(step)[4:]) == step


def test_a_map_from_before_labels_still_decodes():
    body = json.loads(protocol.encode(step_with(labelled_projection([1, 2])))[4:])
    del body["projection"]["label"]
    decoded = protocol.decode_message(json.dumps(body))
    assert isinstance(decoded, protocol.StepCaptured) and decoded.projection is not None
    assert decoded.projection.label is None


def _packed(code: str, fmt: str, values: list) -> dict:
    return {code: base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode(), "shape": [len(values)]}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([1.5, 2], id="float"),
        pytest.param(["3", 1], id="string"),
        pytest.param([True, 0], id="bool"),
        pytest.param([None, 0], id="null"),
        pytest.param([[1], [2]], id="nested"),
        pytest.param("0,1", id="not-a-list"),
        pytest.param(_packed("f64", "d", [0.0] * 8), id="packed-floats"),
        pytest.param({"i64": "not base64!", "shape": [2]}, id="packed-garbage"),
        pytest.param({"u8": base64.b64encode(b"\x01").decode(), "shape": [2]}, id="packed-short"),
    ],
)
def test_bad_labels_are_a_protocol_error(value):
    body = json.loads(protocol.encode(step_with(labelled_projection([1, 2])))[4:])
    body["projection"]["label"] = value
    with pytest.raises(protocol.ProtocolError, match="projection.label"):
        protocol.decode_message(json.dumps(body))
