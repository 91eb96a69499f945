"""The layout at the sizes people's terminals have: nothing that proves a finding is cut.

A new user at 100x30 read "made by VGGEmbedder #2 at ste…" and "norm min 1.895e+04 max 1.8…";
at 80x24 the top line was scrolled away and the footer ended before ``q``. These tests read
what is on screen (each widget's rendered lines, as cropped by its size, and which widget is
at the top and bottom rows), not the text the widgets were given.
"""

from __future__ import annotations

import asyncio
import time

import msgspec.structs
import pytest
from textual.content import Content
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Digits, OptionList, Static

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.widgets.embedding_map import EmbeddingMap
from cossim_tui.tui.widgets.essential_keys import EssentialKeys
from cossim_tui.tui.widgets.history_plot import HistoryPlot
from cossim_tui.tui.widgets.output_log import OutputPane
from cossim_tui.tui.widgets.source_panel import SourcePanel
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel
from cossim_tui.tui.widgets.training_bar import TrainingBar

TARGET = "demo/siamese_stale_partner.py"
SIZES = [(80, 24), (100, 30), (120, 40), (160, 50)]


def stale_partner_step(make) -> protocol.StepCaptured:
    """Step 1 of the article's loop as the demo shows it: a long module name and norms that
    need their exponent."""
    step = make.step1()
    big = protocol.Spread(18950.0, 18950.0, 18950.0)
    args = [
        msgspec.structs.replace(
            arg,
            norm=big,
            made_by=msgspec.structs.replace(arg.made_by, module="VGGEmbedder", call=arg.made_by.call + 1),
        )
        for arg in step.args
    ]
    return msgspec.structs.replace(step, args=args)


def feed_stale_partner(source, make) -> None:
    source.feed(
        make.hello(),
        protocol.TorchHooked(
            version="2.4.1",
            intercepted=[
                "torch.nn.functional.cosine_similarity",
                "torch.cosine_similarity",
                "torch.nn.CosineSimilarity",
                "torch.nn.functional.cosine_embedding_loss",
                "torch.nn.CosineEmbeddingLoss",
            ],
        ),
        make.output("epoch 0 batch 0 loss 0.6931\n"),
        make.step0(paused=False),
        make.output("epoch 0 batch 1 loss 0.6904\n"),
        stale_partner_step(make),
    )


async def paused_at_step1(pilot: Pilot) -> None:
    status = pilot.app.query_one(StatusBar)
    deadline = time.monotonic() + 10
    while "paused at step 1" not in status.state:
        assert time.monotonic() < deadline, f"never paused at step 1; state is {status.state!r}"
        await pilot.pause(0.01)
    await pilot.pause()


def on_screen(widget: Widget) -> str:
    """What ``widget`` shows, as cut by its size (not the text it was given)."""
    width, height = widget.outer_size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


def at(app: InspectorApp, x: int, y: int) -> Widget:
    widget, _ = app.screen.get_widget_at(x, y)
    return widget


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_paused_at_a_stale_partner(snap_compare, make, size):
    from tests.tui.conftest import FakeSource  # (the fixture's class, with the demo's name)

    source = FakeSource(TARGET)
    feed_stale_partner(source, make)
    try:
        assert snap_compare(InspectorApp(source), terminal_size=size, run_before=paused_at_step1)
    finally:
        source.close()


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
def test_every_number_that_proves_the_stale_partner_is_on_screen_whole(make, size):
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=size) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                width, height = size
                # The top line: the state, the script's name and the learning rate.
                assert isinstance(at(app, 1, 0), StatusBar)
                header = on_screen(app.query_one(StatusBar)) + on_screen(app.query_one(TrainingBar))
                assert "paused at step 1" in header
                assert "siamese_stale_partner.py" in header
                assert "lr 0.01" in header
                # The keys to get help and to leave, in the bottom row.
                keys = at(app, width - 3, height - 1)
                assert isinstance(keys, EssentialKeys)
                assert "? Help" in on_screen(keys) and "q Quit" in on_screen(keys)
                # Both tensors' origin with its step, and their norms, whole.
                left = on_screen(app.query_one("#left-tensor", TensorPanel))
                right = on_screen(app.query_one("#right-tensor", TensorPanel))
                assert "made by VGGEmbedder #2" in left and "at step 1" in left
                assert "made by VGGEmbedder #1" in right and "at step 0" in right
                for panel in (left, right):
                    assert "min 1.895e+04" in panel and "max 1.895e+04" in panel
                    assert "mean 1.895e+04" in panel
                    assert "…" not in panel.replace(", …]", "")  # only the list of first values says "more"
                # The similarity and the relation.
                relation = on_screen(app.query_one("#relation-text", Static))
                digits = app.query_one("#mean-cos", Digits)
                assert "0.9993" in relation or (digits.display and digits.value == "0.9993")
                assert "max |a−b|" in relation and "0.0382" in relation
                # The call line, whole, in view.
                panel = app.query_one(SourcePanel)
                source_text = on_screen(panel)
                call = source_text.index("▶ 42 │")
                call_text = " ".join(source_text[call:].split("│  43")[0].split())
                for piece in ("similarity = F.cosine_similarity(", "vector1_tensor,", "vector2_tensor,", "dim=-1)"):
                    assert piece in call_text, source_text
                # ... and its first row is on the screen, above the history and the keys.
                call_row = panel.region.y + source_text[:call].count("\n")
                assert 0 < call_row < height - 2
        finally:
            source.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
def test_help_lines_go_on_under_themselves_rather_than_being_cut(source, size):
    from cossim_tui.tui.screens.help import HelpScreen

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=size) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            help_static = app.screen.query_one("#help-text", Static)
            # The text is no wider than the box shows (it may be taller: the box scrolls).
            geometry = app.screen.find_widget(help_static)
            assert geometry.region.right <= geometry.clip.right
            shown = " ".join(on_screen(help_static).split())
            for text in (
                "step: run to the next cosine-similarity call and pause there",
                "break condition: c also stops where a Python expression holds (cos.mean > 0.999)",
                "embedding map: PCA of the recent vectors of both sides, coloured by label when the batch has one (e again: back)",
            ):
                assert text in shown, f"{text!r} is cut"

    asyncio.run(scenario())


def test_the_output_pane_has_lines_to_read_and_no_sideways_scrollbar_at_100x30(make):
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                pane = app.query_one(OutputPane)
                # The "torch … hooked" note fits the pane's width: it no longer brings a
                # horizontal scrollbar that takes one of the pane's rows.
                assert pane.max_scroll_x == 0
                assert "nn.CosineEmbeddingLoss" in on_screen(pane)
                assert pane.scrollable_content_region.height >= 3
                assert "epoch 0 batch 1 loss 0.6904" in on_screen(pane)
        finally:
            source.close()

    asyncio.run(scenario())


def test_a_long_output_line_goes_on_in_the_next_row_rather_than_sideways(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=(100, 30)) as pilot:
            words = " ".join(f"word{i:03d}" for i in range(40))  # 319 characters, one line
            source.feed(make.hello(), make.output("start\n" + words[:150]), make.output(words[150:] + "\nend\n"))
            pane = app.query_one(OutputPane)
            deadline = time.monotonic() + 5
            while "end" not in pane.lines:
                assert time.monotonic() < deadline, list(pane.lines)
                await pilot.pause(0.01)
            await pilot.pause()
            assert pane.max_scroll_x == 0
            width = pane.scrollable_content_region.width
            assert all(len(line) <= width for line in pane.lines)
            # Every word is there, whole, in order, and the rows after the first say they go on.
            rows = list(pane.lines)
            start, end = rows.index("start"), rows.index("end")
            assert len(rows[start + 1 : end]) >= 4
            assert all(row.startswith("↪ ") for row in rows[start + 2 : end])
            assert " ".join(row.removeprefix("↪ ") for row in rows[start + 1 : end]).split() == words.split()

    asyncio.run(scenario())


def test_a_long_failure_leaves_the_script_name_on_the_top_line_at_80x24(make):
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                message = (
                    "RuntimeError: The size of tensor a (3) must match the size of tensor b (4) "
                    "at non-singleton dimension 1"
                )
                source.feed(
                    make.hello(), make.step0(paused=False), make.exited("error", 1, exception=message)
                )
                status = app.query_one(StatusBar)
                deadline = time.monotonic() + 5
                while not status.state.startswith("failed"):
                    assert time.monotonic() < deadline, status.state
                    await pilot.pause(0.01)
                await pilot.pause()
                header = on_screen(status)
                assert "siamese_stale_partner.py" in header
                assert "failed: RuntimeError" in header
        finally:
            source.close()

    asyncio.run(scenario())


def test_at_80x24_tab_to_the_output_gives_it_the_pairs_place_and_back(make):
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                # Nothing scrolls: the pair right under the top line, the findings focused.
                assert app.screen.scroll_y == 0 and app.screen.max_scroll_y == 0
                assert isinstance(at(app, 1, 1), TensorPanel)
                assert isinstance(app.focused, OptionList)
                pane = app.query_one(OutputPane)
                while app.focused is not pane:
                    await pilot.press("tab")
                await pilot.pause()
                assert pane.region.height >= 5
                assert "epoch 0 batch 1 loss 0.6904" in on_screen(pane)
                assert isinstance(at(app, 1, 0), StatusBar)
                await pilot.press("shift+tab")
                await pilot.pause()
                assert isinstance(at(app, 1, 1), TensorPanel)
                assert app.screen.max_scroll_y == 0
        finally:
            source.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("key, widget", [("g", HistoryPlot), ("e", EmbeddingMap)])
def test_at_80x24_a_picture_takes_the_pairs_place_too_and_nothing_scrolls(make, key, widget):
    """Below 30 rows the plot and the map had the source's few rows: 1 to 3, with the page
    scrolling and their axes, legend and caption off-screen."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                await pilot.press(key)
                await pilot.pause()
                picture = app.query_one(widget)
                assert picture.region.height >= 12, picture.region
                assert app.screen.max_scroll_y == 0
                assert isinstance(at(app, 1, 0), StatusBar)
                await pilot.press(key)
                await pilot.pause()
                assert isinstance(at(app, 1, 1), TensorPanel)  # the pair is back
                assert app.screen.max_scroll_y == 0
        finally:
            source.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "exited, says",
    [
        (("finished", 0, None, None), "finished"),
        (("quit", None, 15, None), "quit"),
        (("killed", None, 9, None), "killed by signal 9"),
        (("finished", 3, None, None), "exit code 3"),
    ],
    ids=["finished", "quit", "killed", "exit-code-3"],
)
def test_at_80x24_a_run_that_ended_says_how_whole_beside_the_training_context(make, exited, says):
    """The walkthrough's top line after `r` to the end read "siamese_stale_partner.py ·
    finished (exit code …": how the run ended, the one thing the line is for, was cut."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                step = make.step1(paused=False, step=39)
                step.context = {"epoch": 1.0, "batch": 39.0, "loss": 0.69, "lr": 0.01}
                source.feed(make.hello(), step, make.exited(*exited))
                status = app.query_one(StatusBar)
                deadline = time.monotonic() + 5
                while status.phase not in ("ended", "failed"):
                    assert time.monotonic() < deadline, status.state
                    await pilot.pause(0.01)
                await pilot.pause()
                header = on_screen(status)
                assert "siamese_stale_partner.py" in header
                assert says in header and "…" not in header, header
                assert "epoch 1" in on_screen(app.query_one(TrainingBar))
        finally:
            source.close()

    asyncio.run(scenario())


# -- the walkthrough at 80x24 and 100x30 after the first fixes (issue 19's leftovers) ---------

MATRIX_TARGET = "demo/collapse_fixed.py"
MATRIX_LINES = [
    "            z1 = model(augment(images))",
    "            z2 = model(augment(images))",
    "            # FIX: InfoNCE; row k of the matrix must pick column k (the other view of image k)",
    "            similarity = F.cosine_similarity(z1[:, None], z2[None, :], dim=-1)",
    "            loss = F.cross_entropy(similarity / TEMPERATURE, torch.arange(len(images)))",
    "            optimizer.zero_grad()",
    "            loss.backward()",
]


def matrix_step(make, *, step: int = 0, paused: bool = True) -> protocol.StepCaptured:
    """Step 0 of ``demo/collapse_fixed.py``: a 16x16 similarity matrix of broadcast views, made by
    a Sequential from an image batch: the tallest summaries of the demos."""
    base = make.step1(paused=paused, step=step)
    image = protocol.Thumbnail(width=2, height=2, channels=1, source_shape=[16, 3, 32, 32], rows=[[[0, 0, 0]] * 2] * 2)
    args = [
        msgspec.structs.replace(
            arg,
            expr=expr,
            shape=shape,
            rows=16,
            grad_fn="UnsqueezeBackward0",
            requires_grad=True,
            norm=protocol.Spread(4.45, 5.6, 7.25),
            stats=protocol.ValueStats(min=-2.797, max=2.647, mean=-3.291e-09, std=1.001),
            preview=[0.2373, 1.16, -0.01435, 0.5, 0.25, 0.125],
            made_by=protocol.ModuleCall(module="Sequential", call=index, step=0),
            input_image=image,
            storage=protocol.StorageInfo(ptr=0x55ED575CCD40 + index, offset=0, strides=strides, element_size=4, span=[0, 2048]),
        )
        for index, (arg, expr, shape, strides) in enumerate(
            zip(base.args, ("z1[:, None]", "z2[None, :]"), ([16, 1, 32], [1, 16, 32]), ([32, 32, 1], [512, 32, 1]))
        )
    ]
    site = protocol.CallSite(
        path=MATRIX_TARGET, line=53, function="main", first_line=50, lines=MATRIX_LINES, call_start=53, call_end=53
    )
    relation = msgspec.structs.replace(base.relation, equal_values=None, max_abs_diff=None, broadcast_shape=[16, 16, 32])
    cos = protocol.Similarity(
        mean=0.0, min=-0.5667, max=0.6818, count=256, nan=0, first=[0.0045, 0.0433, -0.0175, -0.1246, 0.011, 0.2105, -0.1493, 0.0011],
        angle_deg=protocol.Spread(47.0, 89.99, 124.5),
    )
    broadcast = protocol.Finding(
        code="broadcast", severity="info", site=f"{MATRIX_TARGET}:53", step=step,
        message="z1[:, None] (16, 1, 32) and z2[None, :] (1, 16, 32) were broadcast to (16, 16, 32)",
        evidence=["relation.broadcast_shape"],
    )
    return msgspec.structs.replace(
        base, args=args, site=site, relation=relation, cos=cos, findings=[broadcast], context={"epoch": 0, "batch": 0}
    )


async def until_state(pilot: Pilot, text: str) -> None:
    status = pilot.app.query_one(StatusBar)
    deadline = time.monotonic() + 10
    while text not in status.state and text not in on_screen(status):
        assert time.monotonic() < deadline, f"never {text!r}; state is {status.state!r}"
        await pilot.pause(0.01)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
def test_the_tallest_summaries_leave_the_call_line_and_the_keys_in_view(make, size):
    """``demo/collapse_fixed.py`` at 80x24: the tensor panels took 13 rows and the relation 7,
    and the call line fell below the screen; at 100x30 the page scrolled. Under 40 rows the
    storage lines, and under 30 the first values, wait behind ``d``; the evidence stays."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(MATRIX_TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=size) as pilot:
                source.feed(make.hello(), matrix_step(make))
                await until_state(pilot, "paused at step 0")
                width, height = size
                assert app.screen.max_scroll_y == 0
                assert isinstance(at(app, 1, 0), StatusBar)
                assert "collapse_fixed.py" in on_screen(app.query_one(StatusBar))
                keys = at(app, width - 3, height - 1)
                assert isinstance(keys, EssentialKeys) and "q Quit" in on_screen(keys)
                left = on_screen(app.query_one("#left-tensor", TensorPanel))
                assert "made by Sequential #0" in left and "at step 0" in left
                assert "min 4.45" in left and "max 7.25" in left and "mean 5.6" in left
                relation = " ".join(on_screen(app.query_one("#relation-text", Static)).split())
                digits = app.query_one("#mean-cos", Digits)
                assert "0.0000" in relation or (digits.display and digits.value == "0.0000")
                assert "min -0.5667" in relation and "max 0.6818" in relation
                panel = app.query_one(SourcePanel)
                source_text = on_screen(panel)
                call = source_text.index("▶ 53 │")
                call_text = " ".join(source_text[call:].split("│  54")[0].replace("│", " ").split())
                assert "similarity = F.cosine_similarity(z1[:, None], z2[None, :], dim=-1)" in call_text.replace(
                    "( ", "("
                ).replace("[ ", "["), source_text
                assert panel.region.y + source_text[:call].count("\n") < height - 2
                # d: the storage and the first values, in the place of the source, and back.
                assert "ptr" not in left and "strides" not in left
                await pilot.press("d")
                await pilot.pause()
                left = on_screen(app.query_one("#left-tensor", TensorPanel))
                assert "ptr    0x55ed575ccd40 +0" in left and "strides (32, 32, 1)" in left and "first  [" in left
                assert app.screen.max_scroll_y == 0
                await pilot.press("d")
                await pilot.pause()
                assert app.query_one(SourcePanel).display and app.screen.max_scroll_y == 0
        finally:
            source.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=["80x24", "100x30"])
def test_the_top_line_viewing_history_keeps_one_row_at_80x24_and_the_scripts_name(make, size):
    """At 80x24 it wrapped ("… · l:" / "live · demo/…"), taking a row from the call; at 100x30
    a longer state lost the script's name."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=size) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                await pilot.press("left_square_bracket")
                await until_state(pilot, "viewing step 0")
                status = app.query_one(StatusBar)
                header = on_screen(status)
                assert "siamese_stale_partner.py" in header and "…" not in header, header
                if size == (80, 24):
                    assert status.outer_size.height == 1, header
                    assert app.screen.max_scroll_y == 0
        finally:
            source.close()

    asyncio.run(scenario())


def test_a_replay_that_the_user_quit_says_so_whole_at_80x24(make):
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(f"{TARGET} (replay of siamese-2026-12-04.jsonl)")
        app = InspectorApp(source, replay=True)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                step = make.step1(paused=False, step=39)
                source.feed(make.hello(), step, make.exited("quit", None, 15, None))
                await until_state(pilot, "quit")
                header = on_screen(app.query_one(StatusBar))
                assert "quit by the user" in header and "siamese_stale_partner.py" in header and "…" not in header
        finally:
            source.close()

    asyncio.run(scenario())


def test_at_80x24_every_key_in_the_footer_is_whole_and_the_history_line_is_not_cut(make):
    """The footer ended in "b B" beside "? Help"; the history line in "max 1.0000 · " before the
    loss, its step count cut off."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                feed_stale_partner(source, make)
                await paused_at_step1(pilot)
                footer = app.query_one("#keys").children[0]
                await pilot.pause(0.1)
                shown = [key for key in footer.children if key.display]
                assert len(shown) >= 5 and all(key.region.right <= footer.region.right for key in shown)
                assert footer.region.right <= app.query_one(EssentialKeys).region.x
                # The keys shown are the first ones, in order: none is skipped for a later one.
                assert shown == list(footer.children)[: len(shown)]
                summary = app.query_one("#history-summary", Static)
                text = str(summary.render())
                assert on_screen(summary).strip() == text.strip(), (on_screen(summary), text)
                assert text.startswith("now 0.9993")
        finally:
            source.close()

    asyncio.run(scenario())


def test_at_100x30_the_map_says_its_step_and_spread_whole(make):
    """The captions were cut: "PCA of 82 vectors of …" (the step of the map), "spread 0.0323
    (healthy ≈ 1, co…"."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                projection = protocol.Projection(
                    step=17, first_step=2, x=[0.1, -0.1, 0.2], y=[0.0, 0.1, -0.1], side=[0, 1, 1],
                    explained=[0.61, 0.2], spread=0.0323, extent=0.2, dim_size=32, label=[0, 1, 3],
                )
                mapped = msgspec.structs.replace(make.step1(paused=False, step=17), projection=projection)
                source.feed(make.hello(), mapped, make.step1(step=23))
                await until_state(pilot, "paused at step 23")
                await pilot.press("e")
                await pilot.pause()
                picture = app.query_one(EmbeddingMap)
                title = Content.from_markup(str(picture.border_title)).plain
                subtitle = Content.from_markup(str(picture.border_subtitle)).plain
                room = picture.outer_size.width - 6
                assert "(map of step 17)" in title and len(title) <= room, title
                assert "spread 0.0323" in subtitle and len(subtitle) <= room, subtitle
                relation = app.query_one("#relation")
                relation_title = Content.from_markup(str(relation.border_title)).plain
                assert relation_title.startswith("step 23 · ") and len(relation_title) <= relation.outer_size.width - 6
        finally:
            source.close()

    asyncio.run(scenario())


def test_at_80x24_the_findings_list_says_how_to_close_it(source, make):
    from cossim_tui.tui.screens.findings_summary import FindingsSummaryScreen

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=(80, 24)) as pilot:
            source.feed(make.hello(), make.step1())
            await until_state(pilot, "paused at step 1")
            await pilot.press("f")
            await pilot.pause()
            assert isinstance(app.screen, FindingsSummaryScreen)
            box = app.screen.query_one("#summary-box")
            hint = Content.from_markup(str(box.border_subtitle)).plain
            assert "escape: close" in hint and len(hint) <= box.outer_size.width - 6, hint

    asyncio.run(scenario())


def test_a_strip_of_vectors_of_one_number_says_so(source, make):
    """``demo/wrong_dim.py`` at 100x30: a strip of one cell under each panel looked empty."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=(100, 30)) as pilot:
            step = make.step1()
            step.args = [msgspec.structs.replace(arg, strip=[0.5]) for arg in step.args]
            source.feed(make.hello(), step)
            await until_state(pilot, "paused at step 1")
            assert "one value per vector" in on_screen(app.query_one("#strip-left"))

    asyncio.run(scenario())


def test_at_80x24_the_training_context_under_the_source_is_never_cut(make):
    """It read "epoch 0 · batch 1 · loss 0.3133 · lr 0.01…" in the walkthrough."""
    from tests.tui.conftest import FakeSource

    async def scenario():
        source = FakeSource(TARGET)
        app = InspectorApp(source)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                step = stale_partner_step(make)
                step.context = {"epoch": 0.0, "batch": 1.0, "loss": 0.3133, "lr": 0.01, "optimizer_steps": 1.0}
                source.feed(make.hello(), step)
                await paused_at_step1(pilot)
                panel = app.query_one(SourcePanel)
                subtitle = Content.from_markup(str(panel.border_subtitle)).plain
                assert "loss 0.3133" in subtitle and len(subtitle) <= panel.outer_size.width - 6, subtitle
        finally:
            source.close()

    asyncio.run(scenario())
