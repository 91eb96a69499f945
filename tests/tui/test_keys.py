"""Keys as a new user pressed them (issue 19): marks that stay in sight, views that never trap a
key, Ctrl-C as in pdb, key presses that queue, a replay that says nothing runs, and dialogs and
screenshots that show what they should."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.widgets import OptionList, Static

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.screens.break_condition import BreakConditionScreen
from cossim_tui.tui.screens.findings_summary import FindingsSummaryScreen
from cossim_tui.tui.screens.inputs import InputsScreen
from cossim_tui.tui.widgets.essential_keys import EssentialKeys
from cossim_tui.tui.widgets.findings_panel import FindingsPanel

from .test_app import SIZE, paused_at_step0, run, status, text_of, until
from .test_break_and_inputs import picture, recorded_notes


def shown_keys(app: InspectorApp) -> set[str]:
    """The keys the footer lists now (greyed out or not)."""
    return {active.binding.key for active in app.screen.active_bindings.values() if active.binding.show}


# --------------------------------------------------------------------------------------
# m, then c
# --------------------------------------------------------------------------------------


def test_after_m_and_c_the_new_finding_is_the_one_selected_and_explained(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("m", "c")
            # The agent stops at a new finding; the muted one is still listed, marked muted.
            stop = make.step1(step=7)
            stop.findings[0].muted = True
            collapse = make.finding("collapse", "error", "the vectors of different samples all point the same way", 7)
            stop.findings.insert(1, collapse)
            source.feed(stop)
            await until(pilot, lambda: "paused at step 7" in status(app))
            panel = app.query_one(FindingsPanel)
            assert panel.selected_finding is not None and panel.selected_finding.code == "collapse"
            assert text_of(app.query_one("#finding-help", Static)).startswith("the vectors of different samples")
            first = app.query_one("#finding-list", OptionList).get_option_at_index(0).prompt
            assert "stale-partner (muted)" in str(first)

    run(scenario)


# --------------------------------------------------------------------------------------
# The findings list (f) never traps a key
# --------------------------------------------------------------------------------------


async def open_empty_summary(pilot, app: InspectorApp, source, make) -> None:
    quiet = make.step0()
    quiet.findings = []
    source.feed(make.hello(), quiet)
    await until(pilot, lambda: "paused at step 0" in status(app))
    await pilot.press("f")
    await until(pilot, lambda: isinstance(app.screen, FindingsSummaryScreen))


def test_enter_on_an_empty_findings_list_closes_it(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await open_empty_summary(pilot, app, source, make)
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, FindingsSummaryScreen))

    run(scenario)


def test_q_in_the_findings_list_quits(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await open_empty_summary(pilot, app, source, make)
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None)
        assert source.terminated

    run(scenario)


def test_other_keys_in_the_findings_list_close_it_and_do_their_job(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await open_empty_summary(pilot, app, source, make)
            await pilot.press("g")
            await until(pilot, lambda: app.picture == "plot")
            assert not isinstance(app.screen, FindingsSummaryScreen)
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, FindingsSummaryScreen))
            await pilot.press("n")
            await until(pilot, lambda: source.sent == [protocol.Resume("step")])
            assert not isinstance(app.screen, FindingsSummaryScreen)

    run(scenario)


# --------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------


def test_ctrl_c_pauses_a_running_script_and_a_second_one_quits(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("r", "ctrl+c")
            assert source.sent == [protocol.Resume("run"), protocol.Pause()]
            assert "· pausing… ·" in status(app)
            await pilot.press("ctrl+c")  # before the pause has landed: quit
            await until(pilot, lambda: app.return_code is not None)
        assert source.terminated

    run(scenario)


def test_ctrl_c_while_paused_quits(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("ctrl+c")
            await until(pilot, lambda: app.return_code is not None)
        assert source.terminated
        assert source.sent == []

    run(scenario)


# --------------------------------------------------------------------------------------
# Key presses queue
# --------------------------------------------------------------------------------------


def answering_steps(source, make) -> None:
    """Make ``source`` answer each step command with its next paused step, as the agent does."""
    send = source.send
    numbers = iter(range(1, 1000))

    def send_and_answer(message) -> None:
        send(message)
        if message == protocol.Resume("step"):
            source.feed(make.step1(step=next(numbers)))

    source.send = send_and_answer


def test_ten_n_pressed_in_a_burst_make_ten_steps(source, make):
    async def scenario():
        answering_steps(source, make)
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            # As a terminal delivers them: all ten before the app has handled the first.
            for _ in range(10):
                app.post_message(events.Key("n", "n"))
            await until(pilot, lambda: "paused at step 10" in status(app))
            assert source.sent == [protocol.Resume("step")] * 10

    run(scenario)


# --------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------


async def replayed(pilot, app: InspectorApp, source, make) -> None:
    """Steps 3 (pictured) and 4 (not) of a recorded run, as ``TraceSource`` replays them."""
    pictured = make.step1(step=3, paused=False)
    pictured.args[0].input_image = picture(10)
    last = make.step1(step=4)
    source.feed(make.hello(), pictured, last, make.exited())
    await until(pilot, lambda: "finished" in status(app) and app.model.step_count == 2)


def test_a_replay_hides_the_keys_that_drive_the_script_and_says_why_when_pressed(source, make):
    async def scenario():
        app = InspectorApp(source, replay=True)
        notes = recorded_notes(app)
        async with app.run_test(size=SIZE) as pilot:
            await replayed(pilot, app, source, make)
            keys = shown_keys(app)
            assert not keys & {"n", "c", "r", "p", "m", "b"}
            assert {"f", "g"} <= keys
            # ? and q stand beside the footer, always on screen (the layout's ``EssentialKeys``).
            essential = app.query_one(EssentialKeys).render().plain  # type: ignore[union-attr]
            assert "? Help" in essential and "q Quit" in essential
            for key in ("n", "m", "b"):
                await pilot.press(key)
                await until(pilot, lambda: any(f"replay: nothing runs, so {key}" in note for note in notes))
            assert not isinstance(app.screen, BreakConditionScreen)
            assert source.sent == []

    run(scenario)


def test_the_replay_toast_shows_its_brackets(source, make):
    async def scenario():
        app = InspectorApp(source, replay=True)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await replayed(pilot, app, source, make)
            await pilot.press("n")
            await until(pilot, lambda: bool(app.screen.query("Toast")))
            toast = app.screen.query_one("Toast")
            assert "[ and ] walk through the recorded steps" in str(toast.render())

    run(scenario)


def test_i_shows_the_inputs_of_the_step_on_screen(source, make):
    async def scenario():
        app = InspectorApp(source, replay=True)
        notes = recorded_notes(app)
        async with app.run_test(size=SIZE) as pilot:
            await replayed(pilot, app, source, make)
            await pilot.press("i")  # step 4 has no pictures: not step 3's in its place
            await until(pilot, lambda: any("no input images at step 4" in note for note in notes))
            assert not isinstance(app.screen, InputsScreen)
            await pilot.press("left_square_bracket", "i")
            await until(pilot, lambda: isinstance(app.screen, InputsScreen))
            assert app.screen.step.step == 3

    run(scenario)


def test_i_on_an_earlier_step_viewed_during_a_run_shows_that_steps_inputs(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes = recorded_notes(app)
        async with app.run_test(size=SIZE) as pilot:
            pictured = make.step1(step=1, paused=False)
            pictured.args[0].input_image = picture(10)
            source.feed(make.hello(), pictured, make.step1(step=2, paused=False), make.step1(step=3))
            await until(pilot, lambda: "paused at step 3" in status(app))
            await pilot.press("left_square_bracket", "i")
            await until(pilot, lambda: any("no input images at step 2" in note for note in notes))
            assert not isinstance(app.screen, InputsScreen)

    run(scenario)


# --------------------------------------------------------------------------------------
# A break condition that does not compile
# --------------------------------------------------------------------------------------


def test_a_condition_that_does_not_compile_keeps_the_dialog_open_and_says_why(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BreakConditionScreen))
            await pilot.press(*"cos.mean >", "enter")
            await pilot.pause()
            assert isinstance(app.screen, BreakConditionScreen)
            error = app.screen.query_one("#break-error", Static)
            assert error.display and text_of(error).startswith("SyntaxError: invalid syntax")
            assert source.sent == []
            await pilot.press(*" 0.999", "enter")
            await until(pilot, lambda: not isinstance(app.screen, BreakConditionScreen))
            assert source.sent == [protocol.SetBreak("cos.mean > 0.999")]

    run(scenario)


# --------------------------------------------------------------------------------------
# Screenshots
# --------------------------------------------------------------------------------------


def test_a_screenshot_has_no_toasts_in_it(source, make, tmp_path: Path):
    async def scenario():
        app = InspectorApp(source)
        app.screenshot_dir = str(tmp_path)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await paused_at_step0(pilot, source, make)
            app.notify("a toast over the keys", title="toast")
            await until(pilot, lambda: bool(app.screen.query("Toast")))
            await pilot.press("s")
            await until(pilot, lambda: len(list(tmp_path.glob("*.svg"))) == 1)
            svg = next(tmp_path.glob("*.svg")).read_text()
            assert "toast&#160;over" not in svg
            assert "&#160;Quit" in svg  # the footer, which the toast covered

    run(scenario)


def test_s_saves_a_screenshot_of_the_inputs_view_and_leaves_it_open(source, make, tmp_path: Path):
    async def scenario():
        step = make.step1()
        step.args[0].input_image = picture(10)
        app = InspectorApp(source)
        app.screenshot_dir = str(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), step)
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, InputsScreen))
            await pilot.press("s")
            await until(pilot, lambda: len(list(tmp_path.glob("*.svg"))) == 1)
            assert isinstance(app.screen, InputsScreen)
            assert "inputs&#160;of&#160;step&#160;1" in next(tmp_path.glob("*.svg")).read_text()

    run(scenario)
