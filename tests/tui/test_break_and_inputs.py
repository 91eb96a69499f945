"""The break condition (``b``), the input pictures (``i``), the loss sparkline and the training
context on the top line, driven through Pilot against a fake run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.content import Content
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, Sparkline

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.screens.break_condition import BreakConditionScreen
from cossim_tui.tui.screens.inputs import InputsScreen
from cossim_tui.tui.widgets.loss_history import LossHistory
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel
from cossim_tui.tui.widgets.thumbnail_view import UPPER_HALF, ThumbnailView
from cossim_tui.tui.widgets.training_bar import TrainingBar
from waiting import until_async

SIZE = (100, 30)


def text_of(widget: Widget) -> str:
    rendered = widget.render()
    assert isinstance(rendered, Content), f"{widget!r} rendered {type(rendered).__name__}, not Content"
    return rendered.plain


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    await until_async(pilot.pause, condition, timeout)


def paused(app: InspectorApp, step: int) -> Callable[[], bool]:
    return lambda: f"paused at step {step}" in app.query_one(StatusBar).state


def picture(shade: int, size: int = 4) -> protocol.Thumbnail:
    """A ``size``×``size`` picture: a red top half over a blue bottom half, ``shade`` of green."""
    rows = [[[255, shade, 0] if y < size // 2 else [0, shade, 255] for _ in range(size)] for y in range(size)]
    return protocol.Thumbnail(width=size, height=size, channels=3, source_shape=[8, 3, 32, 32], rows=rows)


def run(scenario) -> None:
    asyncio.run(scenario())


# --------------------------------------------------------------------------------------
# Break condition
# --------------------------------------------------------------------------------------


def recorded_notes(app: InspectorApp) -> list[str]:
    """The messages of the notifications the app shows from now on."""
    notes: list[str] = []
    app.notify = lambda message, **options: notes.append(message)  # type: ignore[method-assign]
    return notes


def test_b_sends_the_typed_condition_and_the_top_line_shows_it(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes = recorded_notes(app)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0())
            await until(pilot, paused(app, 0))
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BreakConditionScreen))
            assert app.screen.query_one(Input).has_focus
            await pilot.press(*"cos.mean", "space", ">", "space", *"0.999", "enter")
            await until(pilot, lambda: not isinstance(app.screen, BreakConditionScreen))
            assert source.sent == [protocol.SetBreak("cos.mean > 0.999")]
            assert text_of(app.query_one(TrainingBar)).startswith(" break if cos.mean > 0.999 · epoch 0")

            # The agent confirms it; later it turns it off because it failed at step 3.
            source.feed(protocol.BreakChanged(condition="cos.mean > 0.999"))
            source.feed(
                protocol.BreakChanged(condition="", error="cos.mean > 0.999: TypeError: boom (turned off)", step=3)
            )
            await until(pilot, lambda: "break condition off" in text_of(app.query_one(TrainingBar)))
            assert any("TypeError: boom" in note for note in notes)

            # b again starts from the condition last in force (none), and escape sends nothing.
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BreakConditionScreen))
            assert app.screen.query_one(Input).value == ""
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, BreakConditionScreen))
            assert source.sent == [protocol.SetBreak("cos.mean > 0.999")]

    run(scenario)


def test_an_empty_condition_clears_it(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0())
            await until(pilot, paused(app, 0))
            await pilot.press("b", "x", "enter")
            await until(pilot, lambda: "break if x" in text_of(app.query_one(TrainingBar)))
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BreakConditionScreen))
            assert app.screen.query_one(Input).value == "x"
            await pilot.press("backspace", "enter")
            await until(pilot, lambda: "break" not in text_of(app.query_one(TrainingBar)))
            assert source.sent == [protocol.SetBreak("x"), protocol.SetBreak("")]

    run(scenario)


# --------------------------------------------------------------------------------------
# Input pictures
# --------------------------------------------------------------------------------------


def test_i_shows_both_input_pictures_side_by_side(source, make):
    async def scenario():
        step = make.step1()
        step.args[0].input_image = picture(10)
        step.args[1].input_image = picture(10)
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), step)
            await until(pilot, paused(app, 1))
            assert "image (i)" in text_of(app.query_one("#left-tensor", TensorPanel))
            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, InputsScreen))
            await pilot.pause()
            views = list(app.screen.query(ThumbnailView))
            assert len(views) == 2
            assert views[0].region.y == views[1].region.y and views[0].region.x < views[1].region.x
            for view in views:
                assert view.size == (4, 2)  # four pixels wide, two pixels per cell high
                line = view.render_line(0)
                cells = list(line)
                assert line.text == UPPER_HALF * 4
                # Row 0 over row 1: both red; the second cell row is blue over blue.
                assert cells[0].style.color.triplet == (255, 10, 0)
                assert cells[0].style.bgcolor.triplet == (255, 10, 0)
                lower = list(view.render_line(1))
                assert lower[0].style.bgcolor.triplet == (0, 10, 255)
            await pilot.press("i")
            await until(pilot, lambda: not isinstance(app.screen, InputsScreen))

    run(scenario)


def test_i_on_a_free_run_step_without_pictures_shows_the_latest_pictured_step_and_names_it(source, make):
    async def scenario():
        pictured = make.step1(step=1, paused=False)
        pictured.args[0].input_image = picture(10)
        bare = make.step1(step=2)  # the agent pictured step 1 only
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), pictured, bare)
            await until(pilot, paused(app, 2))
            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, InputsScreen))
            assert app.screen.step is pictured
            assert "inputs of step 1 " in str(app.screen.query_one("#inputs-box").border_title)

    run(scenario)


def test_i_without_pictures_says_why(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes = recorded_notes(app)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0())
            await until(pilot, paused(app, 0))
            await pilot.press("i")
            await pilot.pause()
            assert not isinstance(app.screen, InputsScreen)
            assert any("no input images" in note for note in notes)

    run(scenario)


def test_the_panel_says_when_an_argument_is_the_dataloader_batch(source, make):
    async def scenario():
        step = make.step0()
        step.args[1].made_by = None
        step.args[1].from_loader = True
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), step)
            await until(pilot, paused(app, 0))
            assert "from the DataLoader batch" in text_of(app.query_one("#right-tensor", TensorPanel))
            assert "DataLoader" not in text_of(app.query_one("#left-tensor", TensorPanel))

    run(scenario)


# --------------------------------------------------------------------------------------
# Loss sparkline and training context
# --------------------------------------------------------------------------------------


def test_the_loss_sparkline_follows_the_steps_and_the_top_line_their_context(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(paused=False))
            await until(pilot, lambda: app.model.step_count == 1)
            loss = app.query_one(LossHistory)
            assert list(loss.values) == [0.6931]
            assert text_of(app.query_one(TrainingBar)) == " epoch 0 · batch 0 · lr 0.01 "

            source.feed(make.step1())
            await until(pilot, paused(app, 1))
            assert list(loss.values) == [0.6931, 0.6904]
            assert loss.query_one(Sparkline).data == [0.6931, 0.6904]
            assert "0.6904" in str(loss.query_one("#loss-now").render())
            assert text_of(app.query_one(TrainingBar)) == " epoch 0 · batch 1 · lr 0.01 "

            # A step without a loss (no backward() yet) adds nothing to the sparkline.
            source.feed(make.error_step(2))
            await until(pilot, paused(app, 2))
            assert list(loss.values) == [0.6931, 0.6904]
            assert text_of(app.query_one(TrainingBar)) == " epoch 0 · batch 2 "

    run(scenario)
