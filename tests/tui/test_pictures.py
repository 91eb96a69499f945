"""The pictures of the run, driven as a user would: ``g`` plots the history, ``e`` maps the
embeddings, the value strips show each argument's first vector, ``[``/``]`` and ←/→ walk
through the kept steps, and ``s`` saves a screenshot. The plot and the map are pinned as SVG
snapshots at both terminal sizes, by side and by label (review the diff before
``--snapshot-update``).
"""

from __future__ import annotations

import msgspec.structs
import math
import random
from pathlib import Path

import pytest
from rich.style import Style
from rich.text import Text
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Static

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.widgets.embedding_map import (
    LABEL_COLOURS,
    OTHER_COLOUR,
    SIDE_MARKS,
    EmbeddingMap,
)
from cossim_tui.tui.widgets.history_plot import HistoryPlot, cos_axis
from cossim_tui.tui.widgets.output_log import OutputPane
from cossim_tui.tui.widgets.relation_panel import RelationPanel
from cossim_tui.tui.format import fmt_float
from cossim_tui.tui.widgets.value_strips import ValueStrip, shared_scale

from .test_app import SIZE, run, status, until
from .test_snapshots import wait_for_state

WAVE = [round(math.sin(i / 3), 4) for i in range(48)]


def cloud(step: int, count: int = 96, *, spread: float = 1.0) -> protocol.Projection:
    """A map as the agent sends it: ``count`` points, half of each side, deterministic."""
    rng = random.Random(step)
    xs = [round(rng.gauss(0, spread), 4) for _ in range(count)]
    ys = [round(rng.gauss(0, spread * 0.8), 4) for _ in range(count)]
    extent = max(max(map(abs, xs)), max(map(abs, ys)))
    return protocol.Projection(
        step=step, first_step=max(0, step - 4), x=xs, y=ys, side=[i % 2 for i in range(count)],
        explained=[0.061, 0.048], spread=spread, extent=extent, dim_size=32,
    )


def labelled_cloud(step: int, count: int = 96, classes: int = 5) -> protocol.Projection:
    """A map of a labelled batch: each class a clump of its own around a circle, both sides."""
    rng = random.Random(step)
    label = [rng.randrange(classes) for _ in range(count)]
    xs = [round(1.6 * math.cos(2 * math.pi * c / classes) + rng.gauss(0, 0.25), 4) for c in label]
    ys = [round(1.6 * math.sin(2 * math.pi * c / classes) + rng.gauss(0, 0.25), 4) for c in label]
    return msgspec.structs.replace(
        cloud(step, count), x=xs, y=ys, extent=max(max(map(abs, xs)), max(map(abs, ys))), label=label
    )


def pictured_run(make, count: int = 24) -> list[protocol.StepCaptured]:
    """The article's loop: the similarity climbs to 1, x2 is a stale copy of x1 (same strip).

    Every fourth step has a finding; a map every eight steps and at the last (paused) one.
    """
    steps = []
    for i in range(count):
        step = make.step1(paused=i == count - 1, step=i, mean=min(1.0, 0.6 + i * 0.02))
        step.cos = msgspec.structs.replace(step.cos, min=step.cos.mean - 0.05, max=min(1.0, step.cos.mean + 0.03))
        step.args = [msgspec.structs.replace(a, strip=list(WAVE)) for a in step.args]
        step.args[0].norm = protocol.Spread(5.0 + i * 0.05, 5.0 + i * 0.05, 5.0 + i * 0.05)
        if i % 4:
            step.findings = []
        if i % 8 == 0 or i == count - 1:
            step.projection = cloud(i)
        steps.append(step)
    return steps


def press_after_pause(*keys: str):
    async def run_before(pilot: Pilot) -> None:
        await wait_for_state("paused at step 23")(pilot)
        await pilot.press(*keys)
        await pilot.pause()

    return run_before


# --------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------


def test_history_plot_at_100x30(snap_compare, source, make):
    source.feed(make.hello(), *pictured_run(make))
    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=press_after_pause("g"))


def test_history_plot_at_160x50(snap_compare, source, make):
    source.feed(make.hello(), *pictured_run(make))
    assert snap_compare(InspectorApp(source), terminal_size=(160, 50), run_before=press_after_pause("g"))


def test_embedding_map_at_100x30(snap_compare, source, make):
    source.feed(make.hello(), *pictured_run(make))
    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=press_after_pause("e"))


def test_embedding_map_at_160x50(snap_compare, source, make):
    source.feed(make.hello(), *pictured_run(make))
    assert snap_compare(InspectorApp(source), terminal_size=(160, 50), run_before=press_after_pause("e"))


def test_labelled_embedding_map_at_100x30(snap_compare, source, make):
    steps = pictured_run(make)
    steps[-1].projection = labelled_cloud(23)
    source.feed(make.hello(), *steps)
    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=press_after_pause("e"))


def test_labelled_embedding_map_at_160x50(snap_compare, source, make):
    steps = pictured_run(make)
    steps[-1].projection = labelled_cloud(23)
    source.feed(make.hello(), *steps)
    assert snap_compare(InspectorApp(source), terminal_size=(160, 50), run_before=press_after_pause("e"))


# --------------------------------------------------------------------------------------
# Plot and map
# --------------------------------------------------------------------------------------


async def paused_at_23(pilot: Pilot, source, make) -> None:
    source.feed(make.hello(), *pictured_run(make))
    await until(pilot, lambda: "paused at step 23" in status(pilot.app))  # type: ignore[arg-type]


def test_g_and_e_swap_the_source_and_output_for_a_picture_and_back(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_23(pilot, source, make)
            plot, chart, output = app.query_one(HistoryPlot), app.query_one(EmbeddingMap), app.query_one(OutputPane)
            assert (plot.display, chart.display, output.display) == (False, False, True)
            await pilot.press("g")
            assert (plot.display, chart.display, output.display) == (True, False, False)
            assert plot.border_title == "cos per step at train.py:42"
            assert plot.size.height >= 10, "the plot must have room to be read at 100x30"
            await pilot.press("e")
            assert (plot.display, chart.display, output.display) == (False, True, False)
            assert "PCA of 96 vectors of steps 19–23" in str(chart.border_title)
            await pilot.press("e")
            assert (plot.display, chart.display, output.display) == (False, False, True)

    run(scenario)


def test_the_map_of_an_earlier_step_is_the_last_one_made_at_or_before_it(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_23(pilot, source, make)
            await pilot.press("e", "left", "left")
            chart = app.query_one(EmbeddingMap)
            assert app.viewing == 21
            assert "steps 12–16 (map of step 16)" in str(chart.border_title)
            assert "spread 1 (healthy ≈ 1" in str(chart.border_subtitle)

    run(scenario)


def test_the_map_at_the_end_of_the_run_is_the_one_the_run_ended_with(source, make):
    """A free run after a pause: its maps came every few steps, so at the end the screen showed
    "map of step 8" (``demo/collapse.py``: its step 9, spread 0.15). The agent's map of the
    latest rows comes with the run's end, and is the one shown, for the last step."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            steps = pictured_run(make, 20)
            steps[-1].paused = False
            steps[-1].projection = None  # a free run: the last map was made at step 16
            steps[-2].projection = None
            source.feed(make.hello(), steps[0], *steps[1:])
            await pilot.press("e")
            final = cloud(19, spread=0.05)
            source.feed(
                protocol.ScriptEnded(status="finished", exit_code=0, exception=None, maps=[final]),
                make.exited("finished", 0),
            )
            await until(pilot, lambda: "finished" in status(app))
            await pilot.pause()
            chart = app.query_one(EmbeddingMap)
            title = str(chart.border_title)
            assert title.endswith("vectors of steps 15–19") and "map of step" not in title, title
            assert "spread 0.05" in str(chart.border_subtitle), chart.border_subtitle
            assert app.current is not None and app.current.step == 19 and app.current.projection is None

    run(scenario)


def test_a_map_of_vectors_of_one_number_says_its_one_axis_holds_all_of_the_spread(source, make):
    """``demo/wrong_dim.py``'s map: every point on the first axis. Its share read "1e+02%"."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            paused = make.step1(step=1)
            paused.projection = msgspec.structs.replace(
                cloud(1, count=64), y=[0.0] * 64, explained=[1.0, 3.4e-22], dim_size=1
            )
            source.feed(make.hello(), paused)
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("e")
            await pilot.pause()
            subtitle = str(app.query_one(EmbeddingMap).border_subtitle)
            assert subtitle.endswith("· axes hold 100% + 0% of it"), subtitle

    run(scenario)


def test_a_collapsed_map_is_drawn_as_one_dot_in_the_middle(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            steps = pictured_run(make)
            steps[-1].projection = msgspec.structs.replace(
                cloud(23), x=[0.0] * 96, y=[0.0] * 96, spread=0.0002, extent=0.0
            )
            source.feed(make.hello(), *steps)
            await until(pilot, lambda: "paused at step 23" in status(app))
            await pilot.press("e")
            await pilot.pause()
            chart = app.query_one(EmbeddingMap)
            lines = chart.render().plain.splitlines()  # type: ignore[union-attr]
            marks = [(row, col) for row, line in enumerate(lines) for col, char in enumerate(line) if "⠁" <= char <= "⣿"]
            # One braille cell (the axes never zoom in below ±1), at the centre of the square.
            assert len(set(marks)) == 1
            assert "spread 0.0002" in str(chart.border_subtitle)

    run(scenario)


def marks(chart: EmbeddingMap) -> list[tuple[str, tuple[int, int, int]]]:
    """The map's point marks, top to bottom and left to right, each with its colour."""
    rendered = chart.render()
    assert isinstance(rendered, Text)
    found = []
    for line in rendered.split():
        for span in line.spans:
            text = line.plain[span.start : span.end]
            style = span.style if isinstance(span.style, Style) else Style.parse(span.style)
            for char in text:
                if char in SIDE_MARKS and style.color is not None and style.color.triplet is not None:
                    found.append((char, tuple(style.color.triplet)))
    return found


def subtitle(chart: EmbeddingMap) -> Content:
    return Content.from_markup(chart.border_subtitle)


async def map_of(pilot: Pilot, source, make, projection: protocol.Projection) -> EmbeddingMap:
    steps = pictured_run(make)
    steps[-1].projection = projection
    source.feed(make.hello(), *steps)
    await until(pilot, lambda: "paused at step 23" in status(pilot.app))  # type: ignore[arg-type]
    await pilot.press("e")
    await pilot.pause()
    return pilot.app.query_one(EmbeddingMap)


def test_labels_colour_the_points_and_marks_tell_the_sides_apart(source, make):
    corners = msgspec.structs.replace(
        cloud(23, 4), x=[-0.8, 0.8, -0.8, 0.8], y=[0.8, 0.8, -0.8, -0.8], side=[0, 1, 1, 0], label=[0, 1, 2, -1], extent=0.8
    )

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            chart = await map_of(pilot, source, make, corners)
            first, second, third = LABEL_COLOURS[:3]
            assert marks(chart) == [("●", first), ("+", second), ("+", third), ("●", OTHER_COLOUR)]
            legend = subtitle(chart)
            assert legend.plain.startswith("● x1  + x2  · colour = label ■0 ■1 ■2 ■unlabelled · spread 1 ")
            swatches = [str(span.style) for span in legend.spans if legend.plain[span.start : span.end] == "■"]
            assert swatches == ["#4e79a7", "#f28e2b", "#e15759", "#808080"]

    run(scenario)


def test_only_the_eight_most_frequent_labels_get_colours(source, make):
    # Labels 0-9; 3 and 7 are the rarest (one point each), the others two or three points.
    label = [0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 6, 7, 8, 8, 9, 9, 9, 9]
    many = msgspec.structs.replace(cloud(23, len(label)), label=label)

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            chart = await map_of(pilot, source, make, many)
            assert "colour = label ■0 ■1 ■2 ■4 ■5 ■6 ■8 ■9 ■other · spread" in subtitle(chart).plain
            assert {colour for _, colour in marks(chart)} <= {*LABEL_COLOURS, OTHER_COLOUR}

    run(scenario)


def test_a_map_without_labels_is_drawn_by_side_in_braille(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            chart = await map_of(pilot, source, make, msgspec.structs.replace(cloud(23), label=[-1] * 96))
            assert marks(chart) == []
            assert subtitle(chart).plain.startswith("● x1  ● x2  · spread 1 ")

    run(scenario)


# --------------------------------------------------------------------------------------
# Value strips
# --------------------------------------------------------------------------------------


def strip_cells(strip: ValueStrip) -> list[tuple[str, str]]:
    rendered = strip.render()
    assert isinstance(rendered, Content)
    return [(rendered.plain[span.start : span.end], str(span.style)) for span in rendered.spans][1:]


def test_identical_vectors_give_identical_strips_and_a_dead_one_looks_dead(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            step = make.step1()
            step.args = [msgspec.structs.replace(a, strip=list(WAVE)) for a in step.args]
            source.feed(make.hello(), step)
            await until(pilot, lambda: "paused at step 1" in status(app))
            left, right = app.query_one("#strip-left", ValueStrip), app.query_one("#strip-right", ValueStrip)
            assert strip_cells(left) == strip_cells(right)
            assert len({style for _, style in strip_cells(left)}) > 4, "a live vector shows several colours"

            dead = make.step1(step=2)
            dead.args = [
                msgspec.structs.replace(dead.args[0], strip=list(WAVE)),
                msgspec.structs.replace(
                    dead.args[1], strip=[0.0] * 48, stats=protocol.ValueStats(min=0.0, max=0.0, mean=0.0, std=0.0)
                ),
            ]
            await pilot.press("n")
            source.feed(dead)
            await until(pilot, lambda: "paused at step 2" in status(app))
            cells = strip_cells(right)
            assert len({style for text, style in cells if text != " all zero"}) == 1, "one colour: nothing there"
            assert right.render().plain.endswith("all zero")  # type: ignore[union-attr]
            assert strip_cells(left) != cells

    run(scenario)


def test_a_free_run_step_without_strips_shows_the_latest_strips_of_its_site_and_says_whose(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            pictured = make.step1(step=1, paused=False)
            pictured.args = [msgspec.structs.replace(a, strip=list(WAVE)) for a in pictured.args]
            bare = make.step1(step=2, paused=True)  # no strips: the agent pictured step 1 only
            source.feed(make.hello(), pictured, bare)
            await until(pilot, lambda: "paused at step 2" in status(app))
            left = app.query_one("#strip-left", ValueStrip)
            assert left.summary is pictured.args[0]
            legend = str(app.query_one("#strip-scale", Static).render())
            assert legend.startswith("step 1 ")

            own = make.step1(step=3)
            own.args = [msgspec.structs.replace(a, strip=list(reversed(WAVE))) for a in own.args]
            await pilot.press("n")
            source.feed(own)
            await until(pilot, lambda: "paused at step 3" in status(app))
            assert left.summary is not None and left.summary.strip == list(reversed(WAVE))
            assert str(app.query_one("#strip-scale", Static).render()).startswith("values ")

    run(scenario)


# --------------------------------------------------------------------------------------
# Browsing back
# --------------------------------------------------------------------------------------


def relation_step(app: InspectorApp) -> str:
    return str(app.query_one(RelationPanel).border_title).split(" ·")[0]


def test_brackets_and_arrows_walk_through_the_kept_steps_and_l_returns_live(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_23(pilot, source, make)
            await pilot.press("left_square_bracket")
            assert app.viewing == 22
            assert relation_step(app) == "step 22"
            assert "viewing step 22 of 24 (history)" in status(app)
            await pilot.press("left", "left", "left_square_bracket")
            assert app.viewing == 19
            await pilot.press("right_square_bracket", "right")
            assert app.viewing == 21
            await pilot.press("right", "right")  # forward past the last kept step is the live step
            assert app.viewing is None
            assert relation_step(app) == "step 23"
            await pilot.press("left", "left")
            assert app.viewing == 21
            await pilot.press("l")
            assert app.viewing is None
            assert status(app).startswith("cossim-tui · paused at step 23")
            assert source.sent == [], "browsing never moves the script"

    run(scenario)


def test_browsing_stops_at_the_oldest_kept_step_and_says_so(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            app.notify = lambda message, **options: notes.append(message)  # type: ignore[method-assign]
            source.feed(make.hello(), make.step0(paused=False), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("left", "left")
            assert app.viewing == 0
            assert notes == ["step 0 is the oldest step kept in memory"]

    run(scenario)


def test_browsing_waits_for_a_pause(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(paused=False), make.step1(paused=False))
            await until(pilot, lambda: app.model.step_count == 2)
            await pilot.press("left_square_bracket", "left")
            assert app.viewing is None

    run(scenario)


# --------------------------------------------------------------------------------------
# Screenshots
# --------------------------------------------------------------------------------------


def test_s_saves_an_svg_screenshot_and_says_where(source, make, tmp_path: Path):
    async def scenario():
        app = InspectorApp(source)
        app.screenshot_dir = str(tmp_path)
        notes: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            app.notify = lambda message, **options: notes.append(message)  # type: ignore[method-assign]
            await paused_at_23(pilot, source, make)
            await pilot.press("g", "s")
            saved = list(tmp_path.glob("*.svg"))
            assert len(saved) == 1
            assert notes == [f"screenshot saved to {saved[0]}"]
            svg = saved[0].read_text()
            assert svg.startswith("<svg") and "cos&#160;per&#160;step&#160;at&#160;train.py:42" in svg

    run(scenario)


@pytest.mark.parametrize(
    ("low", "high", "axis"),
    [
        (0.9973, 1.0, (0.9, 1.0)),  # stuck at 1: a flat line at the top, not swings over the height
        (0.5, 0.52, (0.46, 0.56)),  # a narrow range in the middle: centred
        (-1.0, -0.99, (-1.0, -0.9)),  # stuck at -1: at the bottom
        (0.2, 0.9, (0.2, 0.9)),  # wide enough already: as it is
    ],
)
def test_the_similarity_axis_spans_at_least_a_tenth_within_minus_one_to_one(low, high, axis):
    bottom, top = cos_axis(low, high)
    assert (bottom, top) == pytest.approx(axis)
    assert bottom <= low and high <= top


@pytest.mark.parametrize(
    ("size", "expected"),
    [((100, 30), "step 1 · 1st vectors ±{n}"), ((160, 50), "step 1 · 1st vectors: −{n} … +{n}")],
)
def test_the_strip_legend_says_what_the_strips_are_and_keeps_its_numbers(source, make, size, expected):
    """The legend said "step 1 −1.29 · 0 · +1.29": neither the strips' vectors nor that the
    numbers are their colour scale. At 100 columns the short wording still says both, whole."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=size) as pilot:
            pictured = make.step1(step=1, paused=False)
            pictured.args = [msgspec.structs.replace(a, strip=list(WAVE)) for a in pictured.args]
            source.feed(make.hello(), pictured, make.step1(step=2, paused=True))
            await until(pilot, lambda: "paused at step 2" in status(app))
            await pilot.pause()
            number = fmt_float(shared_scale(pictured.args), 3)
            legend = app.query_one("#strip-scale", Static)
            shown = str(legend.render())
            assert shown == expected.format(n=number)
            assert len(shown) <= legend.content_size.width

            own = make.step1(step=3)
            own.args = [msgspec.structs.replace(a, strip=list(WAVE)) for a in own.args]
            await pilot.press("n")
            source.feed(own)
            await until(pilot, lambda: "paused at step 3" in status(app))
            await pilot.pause()
            shown = str(legend.render())
            assert "1st vectors" in shown and number in shown and len(shown) <= legend.content_size.width, shown

    run(scenario)
