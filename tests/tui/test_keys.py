"""Keys as a new user pressed them (issue 19): marks that stay in sight, views that never trap a
key, Ctrl-C as in pdb, key presses that queue, a replay that says nothing runs, and dialogs and
screenshots that show what they should."""

from __future__ import annotations

from textual.widgets import OptionList, Static

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.screens.break_condition import BreakConditionScreen
from cossim_tui.tui.widgets.findings_panel import FindingsPanel

from .test_app import SIZE, paused_at_step0, run, status, text_of, until


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
