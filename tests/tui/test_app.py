"""The inspector driven as a user would: events from a fake run, keys through Pilot.

Each test feeds the app what a real run would send and checks what the user would see
(the text the panels render) or what the script would receive (the commands sent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec.structs
from textual.content import Content
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Digits, OptionList, Static

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.model import MAX_STEPS_KEPT
from cossim_tui.tui.screens.help import HelpScreen
from cossim_tui.tui.widgets.findings_panel import FindingsPanel
from cossim_tui.tui.widgets.history import SimilarityHistory
from cossim_tui.tui.widgets.output_log import NOTE_MARK, OutputPane
from cossim_tui.tui.widgets.relation_panel import RelationPanel
from cossim_tui.tui.widgets.source_panel import SourcePanel
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel
from waiting import until_async

SIZE = (100, 30)


def text_of(widget: Widget) -> str:
    rendered = widget.render()
    assert isinstance(rendered, Content), f"{widget!r} rendered {type(rendered).__name__}, not Content"
    return rendered.plain


def status(app: InspectorApp) -> str:
    return text_of(app.query_one(StatusBar))


def relation_text(app: InspectorApp) -> str:
    return text_of(app.query_one("#relation-text", Static))


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app work until ``condition`` holds: events cross a thread, so give them time."""
    await until_async(pilot.pause, condition, timeout, lambda: f"the condition; status bar says: {status(pilot.app)!r}")  # type: ignore[arg-type]


async def paused_at_step0(pilot: Pilot, source, make) -> None:
    source.feed(make.hello(), make.step0())
    await until(pilot, lambda: "paused at step 0" in status(pilot.app))  # type: ignore[arg-type]


def run(scenario) -> None:
    asyncio.run(scenario())


# --------------------------------------------------------------------------------------
# What a paused step shows
# --------------------------------------------------------------------------------------


def test_paused_step0_shows_both_expressions_and_same_object(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            left = app.query_one("#left-tensor", TensorPanel)
            right = app.query_one("#right-tensor", TensorPanel)
            assert left.border_title == "vector1_tensor"
            assert right.border_title == "vector2_tensor"
            for panel in (left, right):
                text = text_of(panel)
                assert "(1, 32)  float32  cpu" in text
                assert "autograd AddmmBackward0" in text
                assert "made by VGG #0 at step 0" in text
                assert "norm   min 5.657  max 5.657" in text
                assert "over 1 row" in text
                assert "nan 0  inf 0" in text
                assert "first  [0.3121, -1.204" in text
            relation = relation_text(app)
            assert "same object    YES" in relation
            assert "shares storage YES" in relation
            assert "equal values   YES" in relation
            assert "max |a−b|      0" in relation
            assert app.query_one("#mean-cos", Digits).value == "1.0000"
            assert app.query_one("#mean-cos", Digits).display
            assert "step 0 · cosine_similarity" in app.query_one("#relation").border_title
            assert status(app) == "cossim-tui · paused at step 0 · 1 step · train.py"

    run(scenario)


def test_step1_shows_the_detached_partner_and_its_finding(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(paused=False), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            right = text_of(app.query_one("#right-tensor", TensorPanel))
            assert "autograd detached" in right
            assert "made by VGG #0 at step 0" in right
            assert "autograd AddmmBackward0" in text_of(app.query_one("#left-tensor", TensorPanel))
            relation = relation_text(app)
            assert "same object    NO" in relation
            assert "shares storage NO" in relation
            assert "max |a−b|      0.0382" in relation
            assert "2.142°" in relation
            assert app.query_one("#mean-cos", Digits).value == "0.9993"
            findings = app.query_one("#finding-list", OptionList)
            first = findings.get_option_at_index(0).prompt
            assert isinstance(first, Content)
            assert first.plain.startswith(" error  stale-partner vector2_tensor is step 0's")
            help_text = text_of(app.query_one("#finding-help", Static))
            assert help_text.startswith(
                "vector2_tensor is step 0's vector1_tensor (same memory), recycled from the previous batch\n"
                "An argument is a tensor from an earlier step. One argument is"
            )
            assert "\nFix: Recompute the partner" in help_text
            # Choosing the other finding shows its own explanation.
            findings.focus()
            await pilot.press("down")
            help_widget = app.query_one("#finding-help", Static)
            await until(pilot, lambda: "Gradients flow through one side only" in text_of(help_widget))

    run(scenario)


def test_source_panel_marks_the_call_line_and_shows_where_the_loop_is(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            panel = app.query_one(SourcePanel)
            lines = text_of(panel).splitlines()
            call = [line for line in lines if line.startswith("▶")]
            assert len(call) == 1
            assert call[0].startswith("▶ 42 │     similarity = F.cosine_similarity(")
            assert panel.border_title == "train.py:42 in train"
            assert panel.border_subtitle == "epoch 0 · batch 0 · loss 0.6931 · lr 0.01"

    run(scenario)


def test_a_step_whose_call_raised_shows_the_error_instead_of_a_similarity(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.error_step(step=2))
            await until(pilot, lambda: "paused at step 2" in status(app))
            relation = relation_text(app)
            assert relation.startswith("torch raised:\nRuntimeError: The size of tensor a (32) must match")
            assert not app.query_one("#mean-cos", Digits).display

    run(scenario)


def test_a_call_that_raised_is_said_on_the_panel_border_and_counted_by_the_history(source, make):
    """As the agent sends it: torch raised (shapes that do not broadcast), so the relation has
    dim 1 and size 0. The border said "dim 1 · size 0" and the history "no steps yet"."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            raised = make.error_step(step=0)
            raised.relation = protocol.Relation(
                same_object=False, shares_storage=False, equal_values=None, max_abs_diff=None, dim=1, dim_size=0,
                broadcast_shape=None,
            )
            source.feed(make.hello(), raised)
            await until(pilot, lambda: "paused at step 0" in status(app))
            panel = app.query_one(RelationPanel)
            assert Content.from_markup(str(panel.border_subtitle)).plain == "the call raised"
            relation = relation_text(app)
            assert "RuntimeError: The size of tensor a (32) must match" in relation
            assert "no similarity was computed" in relation
            assert text_of(app.query_one("#history-summary", Static)) == "1 step, no similarity yet"

            await pilot.press("n")
            source.feed(make.step1(step=1, mean=0.5))
            await until(pilot, lambda: "paused at step 1" in status(app))
            assert Content.from_markup(str(panel.border_subtitle)).plain == "dim -1 · size 32"
            summary = text_of(app.query_one("#history-summary", Static))
            assert summary.startswith("now 0.5000") and summary.endswith("· 1 step · 1 without one"), summary

            await pilot.press("n")
            source.feed(msgspec.structs.replace(raised, step=2))
            await until(pilot, lambda: "paused at step 2" in status(app))
            assert text_of(app.query_one("#history-summary", Static)).startswith("now none · ")

    run(scenario)


def test_no_findings_says_so(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            clean = make.step1()
            clean.findings = []
            source.feed(make.hello(), clean)
            await until(pilot, lambda: "paused at step 1" in status(app))
            prompt = app.query_one("#finding-list", OptionList).get_option_at_index(0).prompt
            assert isinstance(prompt, Content)
            assert prompt.plain == "no findings at this step"
            assert app.query_one(FindingsPanel).selected_finding is None

    run(scenario)


# --------------------------------------------------------------------------------------
# Keys and the commands they send
# --------------------------------------------------------------------------------------


def test_n_and_space_step_only_when_paused(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("n")
            assert source.sent == [protocol.Resume("step")]
            assert "· running ·" in status(app)
            await pilot.press("n")  # a step is on its way: this one waits for it to land
            assert source.sent == [protocol.Resume("step")]
            source.feed(make.step1())
            await until(pilot, lambda: len(source.sent) == 2)
            assert source.sent == [protocol.Resume("step"), protocol.Resume("step")]
            source.feed(make.step1(step=2))
            await until(pilot, lambda: "paused at step 2" in status(app))
            await pilot.press("space")
            assert source.sent == [protocol.Resume("step")] * 3
            # Running freely there is nothing to step from: n is not kept for later.
            source.feed(make.step1(step=3))
            await until(pilot, lambda: "paused at step 3" in status(app))
            await pilot.press("r", "n")
            source.feed(make.step1(step=4))
            await until(pilot, lambda: "paused at step 4" in status(app))
            assert source.sent == [protocol.Resume("step")] * 3 + [protocol.Resume("run")]

    run(scenario)


def test_c_continues_to_the_next_finding(source, make):
    async def scenario():
        app = InspectorApp(source, break_on="warning")
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("c")
            assert source.sent == [protocol.Resume("continue")]
            assert "· running ·" in status(app)

    run(scenario)


def test_r_runs_freely_and_the_state_says_running(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("r")
            assert source.sent == [protocol.Resume("run")]
            assert status(app) == "cossim-tui · running · 1 step · train.py"
            # While it runs, the screen follows the latest step.
            source.feed(make.step1(paused=False, step=1), make.step1(paused=False, step=2, mean=0.9995))
            await until(pilot, lambda: "3 steps" in status(app))
            assert "running" in status(app)
            assert app.query_one("#mean-cos", Digits).value == "0.9995"
            assert "step 2 · cosine_similarity" in app.query_one("#relation").border_title

    run(scenario)


def test_p_pauses_at_the_next_call(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            await pilot.press("p")  # already paused: nothing to do
            assert source.sent == []
            await pilot.press("r")
            await pilot.press("p")
            assert source.sent == [protocol.Resume("run"), protocol.Pause()]
            assert "· pausing… ·" in status(app)
            # A step already on its way arrives unpaused: still pausing.
            source.feed(make.step1(paused=False, step=1))
            await until(pilot, lambda: "2 steps" in status(app))
            assert "· pausing… ·" in status(app)
            source.feed(make.step1(paused=True, step=2))
            await until(pilot, lambda: "paused at step 2" in status(app))

    run(scenario)


def test_m_mutes_the_selected_finding_at_its_site(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("m")
            assert source.sent == [protocol.Mute("stale-partner", "train.py:42")]
            options = app.query_one("#finding-list", OptionList)
            muted = options.get_option_at_index(0).prompt
            assert isinstance(muted, Content)
            # Before the message, which the list cuts: the mark is always in sight.
            assert muted.plain.startswith(" error  stale-partner (muted) vector2_tensor")
            assert muted.plain.index("(muted)") + len("(muted)") <= options.scrollable_content_region.width
            other = options.get_option_at_index(1).prompt
            assert isinstance(other, Content)
            assert "(muted)" not in other.plain
            # Still listed, and still muted at the next step at the same site.
            await pilot.press("n")
            source.feed(make.step1(step=2))
            await until(pilot, lambda: "paused at step 2" in status(app))
            again = options.get_option_at_index(0).prompt
            assert isinstance(again, Content)
            assert again.plain.startswith(" error  stale-partner (muted)")

    run(scenario)


def test_q_terminates_the_script_and_exits_within_a_second(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await paused_at_step0(pilot, source, make)
            started = time.monotonic()
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None)
            assert time.monotonic() - started < 1.0
        assert source.terminated
        assert app.return_code == 0

    run(scenario)


def test_help_opens_and_closes(source, make):
    async def scenario():
        app = InspectorApp(source, break_on="stale-partner,collapse")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = text_of(app.screen.query_one("#help-text", Static))
            assert "stops at the next finding among: stale-partner, collapse" in help_text
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("question_mark")
            await pilot.press("question_mark")
            assert not isinstance(app.screen, HelpScreen)

    run(scenario)


# --------------------------------------------------------------------------------------
# The state line through a whole run
# --------------------------------------------------------------------------------------


def test_status_bar_follows_the_run_to_a_normal_finish(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert status(app) == "cossim-tui · starting… · 0 steps · train.py"
            source.feed(make.hello())
            await until(pilot, lambda: "· running ·" in status(app))
            source.feed(make.step0())
            await until(pilot, lambda: "paused at step 0" in status(app))
            await pilot.press("r")
            source.feed(
                protocol.ScriptEnded(status="finished", exit_code=0, exception=None),
                make.exited("finished", 0),
            )
            await until(pilot, lambda: "finished" in status(app))
            assert status(app) == "cossim-tui · finished (exit code 0) · 1 step · train.py"
            # The run is over: stepping keys do nothing, the last step stays on screen.
            await pilot.press("n", "c", "r", "p", "m")
            assert source.sent == [protocol.Resume("run")]
            assert "same object    YES" in relation_text(app)
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None)
        assert source.terminated

    run(scenario)


def test_status_bar_says_how_the_script_failed(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.exited("error", 1, None, "ValueError: boom"))
            await until(pilot, lambda: "failed" in status(app))
            assert status(app) == "cossim-tui · failed: ValueError: boom · 0 steps · train.py"
            assert app.query_one(StatusBar).has_class("-failed")

    run(scenario)


def test_status_bar_says_the_script_was_killed(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(), make.exited("killed", None, 9))
            await until(pilot, lambda: "killed" in status(app))
            assert status(app) == "cossim-tui · killed by signal 9 (SIGKILL) · 1 step · train.py"

    run(scenario)


def test_status_bar_says_the_script_could_not_start(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.exited("not-found", 2, None, "can't open file 'trian.py'"))
            await until(pilot, lambda: "could not start" in status(app))
            assert status(app) == "cossim-tui · could not start: can't open file 'trian.py' · 0 steps · train.py"

    run(scenario)


def test_a_stream_that_stops_without_an_exit_is_reported(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello())
            source.close()
            await until(pilot, lambda: "failed" in status(app))
            assert "stopped before it reported how the script ended" in status(app)

    run(scenario)


def test_the_step_count_counts_every_step_even_in_a_burst(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            burst = 3000
            source.feed(make.hello())
            source.feed(*(make.step1(paused=False, step=i, mean=0.9 + i * 1e-5) for i in range(burst - 1)))
            source.feed(make.step1(paused=True, step=burst - 1))
            await until(pilot, lambda: f"paused at step {burst - 1}" in status(app), timeout=20)
            assert "· 3,000 steps ·" in status(app)
            assert app.model.step_count == burst
            assert len(app.model.steps) == MAX_STEPS_KEPT
            assert app.model.steps[-1].step == burst - 1
            history = app.query_one(SimilarityHistory)
            assert len(history.values) == 2000
            assert "now 0.9993" in text_of(app.query_one("#history-summary", Static))

    run(scenario)


# --------------------------------------------------------------------------------------
# The script's output and problems on the channel
# --------------------------------------------------------------------------------------


def test_output_chunks_split_mid_line_are_joined(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.output("epoch 1 lo"), make.output("ss 0.6931\nepoch 2"))
            source.feed(make.output(" loss 0.6904\n"))
            log = app.query_one(OutputPane)
            await until(pilot, lambda: "epoch 2 loss 0.6904" in log.lines)
            assert list(log.lines[:2]) == ["epoch 1 loss 0.6931", "epoch 2 loss 0.6904"]

    run(scenario)


def test_the_output_pane_follows_a_traceback_to_its_last_line(source, make):
    """At 100x30 the pane shows two lines, and the torch banner is wider than the pane (a
    horizontal scrollbar): the pane stopped above "RuntimeError: …", reachable only by hand."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            traceback = (
                "Traceback (most recent call last):\n"
                '  File "train.py", line 24, in <module>\n'
                "    train()\n"
                '  File "train.py", line 14, in similarity\n'
                "    return F.cosine_similarity(a, b)\n"
                "           ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
                "RuntimeError: The size of tensor a (8) must match the size of tensor b (5) at non-singleton dimension 1\n"
            )
            hooked = protocol.TorchHooked(
                version="2.4.1",
                intercepted=["torch.nn.functional.cosine_similarity", "torch.cosine_similarity", "torch.nn.CosineSimilarity"],
            )
            source.feed(make.hello(), hooked, make.output("about to compare\n"), make.error_step(step=0))
            await until(pilot, lambda: "paused at step 0" in status(app))
            await pilot.press("r")
            source.feed(make.output(traceback), make.exited("error", 1, exception="RuntimeError: The size of tensor a"))
            await until(pilot, lambda: "failed" in status(app))
            await pilot.pause()
            log = app.query_one(OutputPane)
            await until(pilot, lambda: any(line.startswith("RuntimeError: ") for line in log.lines))
            await pilot.pause()
            # The last line (wrapped onto rows marked ↪ where the pane is narrower than it) is
            # in view, down to its end; the line after it is the empty one after the final newline.
            last = len(log.lines) - 2
            assert log.lines[last].startswith(("RuntimeError: ", "↪ ")), list(log.lines)
            top, height = log.scroll_offset.y, log.scrollable_content_region.height
            assert top <= last < top + height, (top, height, last, list(log.lines))

    run(scenario)


def test_a_channel_problem_is_shown_and_the_app_keeps_working(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes: list[tuple[str, dict]] = []
        async with app.run_test(size=SIZE) as pilot:
            app.notify = lambda message, **options: notes.append((message, options))  # type: ignore[method-assign]
            source.feed(make.hello(), make.output("half a li"), make.problem("unknown message kind 'bogus'"))
            log = app.query_one(OutputPane)
            await until(pilot, lambda: any("bogus" in line for line in log.lines))
            assert notes and notes[0][0] == "unknown message kind 'bogus'"
            assert notes[0][1]["severity"] == "error"
            assert f"{NOTE_MARK}channel problem: unknown message kind 'bogus'" in log.lines
            assert "half a li" in log.lines
            source.feed(make.step0())
            await until(pilot, lambda: "paused at step 0" in status(app))
            await pilot.press("n")
            assert source.sent == [protocol.Resume("step")]

    run(scenario)


def test_a_broken_reader_is_shown_not_swallowed(source, make):
    class BrokenSource(type(source)):  # type: ignore[misc]
        def events(self):
            yield make.hello()
            raise OSError("connection reset by peer")

    broken = BrokenSource()

    async def scenario():
        app = InspectorApp(broken)
        notes: list[tuple[str, dict]] = []
        # Before the app starts: the reader fails at once, possibly before run_test hands over.
        app.notify = lambda message, **options: notes.append((message, options))  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "lost contact" in status(app))
            assert status(app) == (
                "cossim-tui · lost contact with the run: OSError: connection reset by peer · 0 steps · train.py"
            )
            assert notes and notes[0][1]["severity"] == "error"
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None)
        assert broken.terminated

    run(scenario)


def test_escape_sequences_in_the_output_are_shown_not_obeyed(source, make):
    """A script that prints a clear-screen sequence must not clear the user's terminal."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.output("before\x1b[2Jafter\n"))
            log = app.query_one(OutputPane)
            await until(pilot, lambda: "before␛[2Jafter" in log.lines)
            assert not any("\x1b" in line for line in log.lines)

    run(scenario)


def test_an_unexpected_event_from_the_run_is_shown_as_a_channel_problem(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), object(), make.step0())  # type: ignore[arg-type]
            await until(pilot, lambda: app.model.phase == "paused")
            log = app.query_one(OutputPane)
            assert any("channel problem: unexpected event from the run: object" in line for line in log.lines)
            # The run goes on: the step after it is on screen.
            assert status(app).startswith("cossim-tui · paused at step 0")

    run(scenario)


def test_source_panel_names_the_library_function_a_call_went_through(source, make):
    """A call made inside a library is at the user's line; the title says which library
    function made it (the report has it in full, as ``via``)."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            first = make.step0()
            via = "lightly.loss.negative_cosine_similarity:NegativeCosineSimilarity.forward"
            first.site = msgspec.structs.replace(first.site, via=via)
            source.feed(make.hello(), first)
            await until(pilot, lambda: "paused at step 0" in status(app))
            assert app.query_one(SourcePanel).border_title == "train.py:42 in train via NegativeCosineSimilarity.forward"

    run(scenario)
