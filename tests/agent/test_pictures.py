"""The agent's pictures are right: the embedding map bunches collapsed vectors into one dot and
spreads healthy ones into a cloud, and the value strips are real elements of each argument's
first vector, so identical vectors give identical strips and a dead vector an all-zero one.
Neither may touch the script's random stream or raise into it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import builders
from cossim_tui import protocol
from cossim_tui.agent.projection import ProjectionMaps
from cossim_tui.agent.strips import STRIP, value_strips


def feed(maps: ProjectionMaps, batches: list[tuple[torch.Tensor, torch.Tensor]], site: str = "train.py:42"):
    projection = None
    for step, (a, b) in enumerate(batches):
        projection = maps.observe(step, site, a, b, -1, force=step == len(batches) - 1)
    return projection


def radius(projection: protocol.Projection) -> float:
    return max(math.hypot(x, y) for x, y in zip(projection.x, projection.y))


# --------------------------------------------------------------------------------------
# Embedding map
# --------------------------------------------------------------------------------------


def test_collapsed_rows_project_to_one_dot():
    torch.manual_seed(0)
    direction = torch.randn(1, 64)
    # Every sample the same direction (norms differ: cosine similarity does not see them).
    batches = [(direction * (torch.rand(16, 1) + 0.5), direction * 2.0 * torch.ones(16, 1)) for _ in range(6)]
    projection = feed(ProjectionMaps(), batches)
    assert projection is not None
    assert len(projection.x) == len(projection.y) == len(projection.side) == 2 * 6 * 16
    assert set(projection.side) == {0, 1}
    assert radius(projection) < 1e-3
    assert projection.spread < 1e-3


def test_gaussian_rows_spread_into_a_cloud():
    torch.manual_seed(0)
    batches = [(torch.randn(16, 64), torch.randn(16, 64)) for _ in range(6)]
    projection = feed(ProjectionMaps(), batches)
    assert projection is not None
    assert radius(projection) > 1.0
    # The collapse code's unit: a healthy cloud has a spread of about 1, whatever d is.
    assert 0.8 < projection.spread < 1.2
    assert 0 < projection.explained[1] <= projection.explained[0] < 0.5
    assert projection.extent == pytest.approx(max(max(map(abs, projection.x)), max(map(abs, projection.y))), abs=1e-4)
    assert projection.first_step == 0 and projection.step == 5


def test_the_ring_is_bounded_and_keeps_the_most_recent_rows():
    maps = ProjectionMaps(rows_per_side=8)
    torch.manual_seed(0)
    batches = [(torch.randn(5, 16), torch.randn(5, 16)) for _ in range(10)]
    projection = feed(maps, batches)
    assert projection is not None
    assert len(projection.x) == 16  # 8 rows of each side
    assert projection.first_step == 8  # steps 8 (3 of its rows) and 9 (all 5)


def test_a_map_is_computed_every_few_steps_or_when_forced():
    maps = ProjectionMaps(every=4)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    due = [maps.observe(step, "s", a, b, -1) is not None for step in range(9)]
    assert due == [True, False, False, False, True, False, False, False, True]
    assert maps.observe(9, "s", a, b, -1, force=True) is not None


def test_the_map_does_not_consume_the_scripts_random_numbers():
    batches = [(torch.randn(4, 8), torch.randn(4, 8)) for _ in range(3)]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    feed(ProjectionMaps(), batches)
    assert torch.equal(torch.rand(3), expected)


def test_unprojectable_calls_give_no_map_and_never_raise():
    maps = ProjectionMaps()
    assert maps.observe(0, "s", torch.randn(4, 8), torch.randn(4, 16), -1, force=True) is None  # widths differ
    assert maps.observe(0, "s", 1.0, torch.randn(4, 8), -1, force=True) is None
    assert maps.observe(0, "s", torch.randn(4, 8), torch.randn(4, 8), 5, force=True) is None
    assert maps.observe(0, "s", torch.randn(4, 8, device="meta"), torch.randn(4, 8, device="meta"), -1, force=True) is None


def test_vectors_of_one_number_get_a_map_on_one_axis():
    """A similarity over a dim of size 1 (``demo/wrong_dim.py``: (1, 32) with ``dim=0``) compares
    32 vectors of one number each: once normalised they are ±1, on one axis. Such a site had no
    map at all, even at a pause ("no map yet")."""
    maps = ProjectionMaps()
    a, b = torch.randn(1, 32), torch.randn(1, 32)
    projection = maps.observe(0, "s", a, b, 0, force=True)
    assert projection is not None and projection.dim_size == 1
    assert len(projection.x) == 64
    assert all(abs(y) < 1e-4 for y in projection.y)
    # Every point is its vector's sign, less the mean sign, on the first axis (or its mirror).
    signs = torch.cat([a.sign().reshape(-1), b.sign().reshape(-1)])
    centred = (signs - signs.mean()).tolist()
    assert [round(abs(x), 3) for x in projection.x] == [round(abs(c), 3) for c in centred]
    assert maps.observe(0, "t", torch.randn(4, 1), torch.randn(4, 1), -1, force=True) is not None


def test_the_map_survives_a_change_of_width_at_a_site():
    maps = ProjectionMaps()
    assert maps.observe(0, "s", torch.randn(4, 8), torch.randn(4, 8), -1, force=True) is not None
    projection = maps.observe(1, "s", torch.randn(4, 16), torch.randn(4, 16), -1, force=True)
    assert projection is not None and projection.dim_size == 16 and len(projection.x) == 8


# --------------------------------------------------------------------------------------
# Value strips
# --------------------------------------------------------------------------------------


def test_strips_are_evenly_spaced_elements_of_the_first_vector():
    x = torch.arange(2 * 480, dtype=torch.float32).reshape(2, 480)
    first, second = value_strips(x, x + 1, -1)
    assert len(first) == len(second) == STRIP
    assert first[0] == 0.0 and first[-1] == 479.0
    assert all(v in set(range(480)) for v in first)
    assert second == [v + 1 for v in first]


def test_identical_vectors_give_identical_strips_and_a_dead_one_is_all_zero():
    x = torch.randn(4, 32)
    first, second = value_strips(x, x.clone(), -1)
    assert first == second == x[0].tolist()
    dead, alive = value_strips(torch.zeros(4, 32), x, -1)
    assert dead == [0.0] * 32 and alive == x[0].tolist()


def test_strips_follow_the_reduced_dim_and_skip_what_has_no_values():
    x = torch.randn(3, 5, 7)
    assert value_strips(x, x, 1)[0] == x[0, :, 0].tolist()
    assert value_strips(1.0, x, -1)[0] == []
    assert value_strips(torch.randn(2, 4, device="meta"), x[..., :4], -1)[0] == []


# --------------------------------------------------------------------------------------
# On the wire
# --------------------------------------------------------------------------------------


def test_strips_and_maps_cross_the_channel_and_older_peers_may_leave_them_out():
    torch.manual_seed(0)
    maps = ProjectionMaps()
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    projection = maps.observe(0, "train.py:42", a, b, -1)
    summary = builders.tensor("a", (8, 16), layout="strided", strip=value_strips(a, b, -1)[0])
    step = builders.step(0, [summary], paused=True, projection=projection)
    body = protocol.encode(step)[4:]
    assert protocol.decode_message(body) == step
    # A trace or agent from before the pictures: the fields are optional.
    bare = protocol.to_builtins(step)
    del bare["projection"], bare["args"][0]["strip"]
    bare["kind"] = "step"
    decoded = protocol.decode_message(json.dumps(bare))
    assert decoded.projection is None and decoded.args[0].strip == []  # type: ignore[attr-defined]
