"""Findings point at their proof, the run's findings add up, and earlier steps can be looked at.

Evidence: the finding under the cursor lights up the fields that prove it (a relation line,
an argument's whole panel, the large similarity). Summary: ``f`` lists every finding of the
run, counted per (code, site) over all steps, not only those still in memory. History: enter
on a row shows that step on every panel, unmistakably marked, until ``l`` or a stepping key.
"""

from __future__ import annotations

import io

import msgspec.structs

from rich.console import Console
from textual.color import Color
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Digits, OptionList, Static

from cossim_tui import protocol
from cossim_tui.tui import palette
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.model import MAX_STEPS_KEPT
from cossim_tui.tui.screens.findings_summary import FindingsSummaryScreen
from cossim_tui.tui.screens.help import HelpScreen
from cossim_tui.tui.widgets.findings_panel import FindingsPanel
from cossim_tui.tui.widgets.history import SimilarityHistory
from cossim_tui.tui.widgets.relation_panel import RelationPanel
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel

from .test_app import SIZE, run, status, text_of, until

EVIDENCE_STYLES = set(palette.EVIDENCE.values())


def lit_lines(content: Content) -> list[str]:
    """The lines of ``content`` drawn on an evidence background, as plain text."""
    return [
        line.plain.rstrip()  # lit lines are padded to the panel's width
        for line in content.split("\n")
        if any(span.style in EVIDENCE_STYLES for span in line.spans)
    ]


def lit_relation_lines(app: InspectorApp) -> list[str]:
    rendered = app.query_one("#relation-text", Static).render()
    assert isinstance(rendered, Content)
    return lit_lines(rendered)


def lit_tensor_lines(panel: TensorPanel) -> list[str]:
    rendered = panel.render()
    assert isinstance(rendered, Content)
    return lit_lines(rendered)


def evidence_classes(widget: Widget) -> set[str]:
    return {name for name in widget.classes if name.startswith("-evidence-")}


def with_finding(step: protocol.StepCaptured, code: str, severity: str, *evidence: str) -> protocol.StepCaptured:
    """``step`` with one finding proven by ``evidence``."""
    finding = protocol.Finding(code, severity, f"{code} here", step.site.label, step.step, list(evidence))  # type: ignore[arg-type]
    return msgspec.structs.replace(step, findings=[finding])


async def choose_finding(pilot, index: int) -> None:
    """Move the findings cursor as a user would: focus the list, then arrow keys."""
    option_list = pilot.app.query_one("#finding-list", OptionList)
    option_list.focus()
    await pilot.press("home", *(["down"] * index))
    await pilot.pause()


# --------------------------------------------------------------------------------------
# Evidence lights up
# --------------------------------------------------------------------------------------


def test_a_same_object_finding_lights_up_the_same_object_line(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0())
            await until(pilot, lambda: "paused at step 0" in status(app))
            await until(pilot, lambda: bool(lit_relation_lines(app)))
            assert lit_relation_lines(app) == ["same object    YES"]
            # Only the proof: the other panels and lines stay as they were.
            for panel in app.query(TensorPanel):
                assert lit_tensor_lines(panel) == []
                assert evidence_classes(panel) == set()
            assert evidence_classes(app.query_one("#mean-cos", Digits)) == set()
            # The next step has no finding: nothing stays lit.
            await pilot.press("n")
            clean = make.step1(step=1)
            clean.findings = []
            source.feed(clean)
            await until(pilot, lambda: "paused at step 1" in status(app))
            await until(pilot, lambda: not lit_relation_lines(app))
            assert all(not evidence_classes(panel) for panel in app.query(TensorPanel))

    run(scenario)


def test_a_stale_partner_lights_up_the_partners_panel_and_moving_the_cursor_follows(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            left = app.query_one("#left-tensor", TensorPanel)
            right = app.query_one("#right-tensor", TensorPanel)
            await until(pilot, lambda: bool(evidence_classes(right)))
            # stale-partner (error) names args.1: the partner's whole panel, in the error colour.
            assert evidence_classes(right) == {"-evidence-error"}
            border_type, border_color = right.styles.border_top
            assert border_type == "heavy"
            assert border_color == Color.parse(app.theme_variables["error"])
            assert evidence_classes(left) == set()
            assert lit_relation_lines(app) == []
            # detached-partner (info) names args.grad_fn: the autograd line of both arguments.
            await choose_finding(pilot, 1)
            assert app.query_one(FindingsPanel).selected_finding.code == "detached-partner"
            await until(pilot, lambda: not evidence_classes(right))
            assert lit_tensor_lines(left) == ["autograd AddmmBackward0"]
            assert lit_tensor_lines(right) == ["autograd detached"]
            await choose_finding(pilot, 0)
            await until(pilot, lambda: evidence_classes(right) == {"-evidence-error"})
            assert lit_tensor_lines(left) == lit_tensor_lines(right) == []

    run(scenario)


def test_evidence_paths_reach_the_lines_that_show_them(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            left = app.query_one("#left-tensor", TensorPanel)
            right = app.query_one("#right-tensor", TensorPanel)
            source.feed(make.hello(), with_finding(make.step1(step=0), "zero-norm", "error", "args.0.norm"))
            await until(pilot, lambda: bool(lit_tensor_lines(left)))
            assert lit_tensor_lines(left) == ["norm   min 5.702  max 5.702", "       mean 5.702  over 1 row"]
            assert lit_tensor_lines(right) == []

            await pilot.press("n")
            source.feed(with_finding(make.step1(step=1), "non-finite", "error", "args.nan", "cos.nan"))
            await until(pilot, lambda: "paused at step 1" in status(app))
            await until(pilot, lambda: lit_tensor_lines(right) == ["nan 0  inf 0"])
            assert lit_tensor_lines(left) == ["nan 0  inf 0"]

            await pilot.press("n")
            source.feed(with_finding(make.step1(step=2), "detached-partner", "info", "args.1.grad_fn", "args.stats"))
            await until(pilot, lambda: "paused at step 2" in status(app))
            await until(pilot, lambda: "autograd detached" in lit_tensor_lines(right))
            assert lit_tensor_lines(right) == ["autograd detached", "values min -1.204  max 1.731", "       mean 0.0821  std 0.9977"]
            assert lit_tensor_lines(left) == ["values min -1.204  max 1.731", "       mean 0.0821  std 0.9977"]

            await pilot.press("n")
            source.feed(with_finding(make.step1(step=3), "saturated", "warning", "cos"))
            await until(pilot, lambda: "paused at step 3" in status(app))
            digits = app.query_one("#mean-cos", Digits)
            await until(pilot, lambda: evidence_classes(digits) == {"-evidence-warning"})
            assert lit_relation_lines(app) == []

            await pilot.press("n")
            source.feed(with_finding(make.step1(step=4), "degenerate-dim", "error", "relation.dim"))
            await until(pilot, lambda: "paused at step 4" in status(app))
            relation = app.query_one(RelationPanel)
            await until(pilot, lambda: not evidence_classes(digits))
            subtitle = Content.from_markup(relation.border_subtitle)
            assert subtitle.plain == "dim -1 · size 32"
            assert lit_lines(subtitle) == ["dim -1 · size 32"]

    run(scenario)


# --------------------------------------------------------------------------------------
# The findings summary
# --------------------------------------------------------------------------------------


def summary_rows(screen: FindingsSummaryScreen) -> list[str]:
    option_list = screen.query_one("#summary-list", OptionList)
    rows = []
    for index in range(option_list.option_count):
        prompt = option_list.get_option_at_index(index).prompt
        assert isinstance(prompt, Content)
        rows.append(" ".join(prompt.plain.split()))
    return rows


def test_the_summary_groups_two_sites_and_counts_every_step(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), *make.two_sites(30))
            await until(pilot, lambda: "paused at step 29" in status(app))
            await pilot.press("f")
            assert isinstance(app.screen, FindingsSummaryScreen)
            assert summary_rows(app.screen) == [
                "at eval.py:7",
                "error same-object 10 0 27 z and z are the same tensor object",
                "at train.py:42",
                (
                    "error stale-partner 20 1 29 vector2_tensor is step 0's vector1_tensor (same memory), "
                    "recycled from the previous batch"
                ),
                (
                    "info detached-partner 20 1 29 vector1_tensor carries autograd history (AddmmBackward0), "
                    "vector2_tensor does not"
                ),
            ]
            # The cursor skips the site headings: down goes from same-object to stale-partner.
            await pilot.press("down")
            assert app.screen.selected_entry.code == "stale-partner"
            # l does nothing while the screen follows the live run.
            assert "l" not in app.screen.active_bindings
            await pilot.press("enter")
            assert not isinstance(app.screen, FindingsSummaryScreen)
            assert app.viewing == 1
            bar = app.query_one(StatusBar)
            assert status(app).startswith(
                "cossim-tui · viewing step 1 of 30 (history) — press l for the live step · live: paused at step 29"
            )
            assert bar.has_class("-history")
            # Every panel shows step 1, and the finding chosen is selected with its proof lit.
            assert app.query_one(RelationPanel).border_title.startswith("step 1 ·")
            assert app.query_one(FindingsPanel).selected_finding.code == "stale-partner"
            assert app.query_one("#source").border_title == "train.py:42 in train"
            await until(pilot, lambda: evidence_classes(app.query_one("#right-tensor")) == {"-evidence-error"})

            # l: back to the live step.
            assert "l" in app.screen.active_bindings
            await pilot.press("l")
            assert app.viewing is None
            assert status(app) == "cossim-tui · paused at step 29 · 30 steps · train.py"
            assert not bar.has_class("-history")
            assert app.query_one(RelationPanel).border_title.startswith("step 29 ·")
            assert source.sent == []

    run(scenario)


def test_the_summary_marks_muted_findings(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(paused=False), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("m")  # stale-partner at train.py:42, muted from the inspector
            agent_muted = make.step1(step=2)
            agent_muted.findings[1].muted = True  # detached-partner, muted by the agent (--ignore)
            await pilot.press("n")
            source.feed(agent_muted)
            await until(pilot, lambda: "paused at step 2" in status(app))
            await pilot.press("f")
            assert summary_rows(app.screen)[1:] == [
                "error same-object 1 0 0 vector1_tensor and vector2_tensor are the same tensor object",
                (
                    "error stale-partner 2 1 2 muted vector2_tensor is step 0's vector1_tensor (same memory), "
                    "recycled from the previous batch"
                ),
                (
                    "info detached-partner 2 1 2 muted vector1_tensor carries autograd history (AddmmBackward0), "
                    "vector2_tensor does not"
                ),
            ]

    run(scenario)


def test_escape_and_f_close_the_summary(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f")
            assert isinstance(app.screen, FindingsSummaryScreen)
            assert summary_rows(app.screen) == ["no findings so far"]
            await pilot.press("escape")
            assert not isinstance(app.screen, FindingsSummaryScreen)
            await pilot.press("f", "f")
            assert not isinstance(app.screen, FindingsSummaryScreen)
            assert app.viewing is None

    run(scenario)


def test_n_while_viewing_history_steps_the_live_run_and_returns_to_live(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), *make.two_sites(6))
            await until(pilot, lambda: "paused at step 5" in status(app))
            await pilot.press("f", "enter")  # same-object at eval.py:7, first seen at step 0
            assert app.viewing == 0
            assert "viewing step 0 of 6 (history)" in status(app)
            await pilot.press("n")
            assert source.sent == [protocol.Resume("step")]
            assert app.viewing is None
            assert status(app) == "cossim-tui · running · 6 steps · train.py"
            assert not app.query_one(StatusBar).has_class("-history")
            source.feed(make.step1(step=6))
            await until(pilot, lambda: "paused at step 6" in status(app))
            assert app.query_one(RelationPanel).border_title.startswith("step 6 ·")

    run(scenario)


def test_history_stays_on_screen_while_the_run_goes_on(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0(paused=False), make.step1())
            await until(pilot, lambda: "paused at step 1" in status(app))
            await pilot.press("r", "f", "enter")
            assert app.viewing == 0
            source.feed(*(make.step1(paused=False, step=i) for i in range(2, 9)))
            await until(pilot, lambda: app.model.step_count == 9)
            # A free run's count is redrawn at most every RUNNING_REDRAW: steps that came in a
            # second batch are on screen by the next frame.
            await until(pilot, lambda: " of 9 " in status(app))
            assert status(app).startswith("cossim-tui · viewing step 0 of 9 (history)")
            assert "live: running" in status(app)
            assert app.query_one(RelationPanel).border_title.startswith("step 0 ·")
            await pilot.press("l")
            assert app.query_one(RelationPanel).border_title.startswith("step 8 ·")

    run(scenario)


def test_a_jump_to_a_step_no_longer_kept_says_so(source, make):
    async def scenario():
        app = InspectorApp(source)
        notes: list[tuple[str, dict]] = []
        async with app.run_test(size=SIZE) as pilot:
            app.notify = lambda message, **options: notes.append((message, options))  # type: ignore[method-assign]
            total = MAX_STEPS_KEPT + 5
            steps = [make.eval_step(0)] + [make.step1(paused=False, step=i) for i in range(1, total)]
            steps[-1].paused = True
            source.feed(make.hello(), *steps)
            await until(pilot, lambda: f"paused at step {total - 1}" in status(app), timeout=20)
            assert app.model.steps[0].step == 5
            await pilot.press("f")
            rows = summary_rows(app.screen)
            # Counted over the whole run, not only the steps still in memory.
            assert "error same-object 1 0 0 z and z are the same tensor object" in rows
            assert any(row.startswith(f"error stale-partner {total - 1:,} 1 {total - 1} ") for row in rows)
            await pilot.press("enter")  # same-object, first (and only) seen at step 0
            assert app.viewing is None
            assert not isinstance(app.screen, FindingsSummaryScreen)
            assert notes and notes[-1][1]["severity"] == "warning"
            assert notes[-1][0].startswith("step 0 is no longer in memory")
            assert f"steps 5 to {total - 1}" in notes[-1][0]
            assert status(app).startswith(f"cossim-tui · paused at step {total - 1}")

    run(scenario)


def test_help_lists_the_new_keys(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = text_of(app.screen.query_one("#help-text", Static))
            assert "f  findings so far, by call site" in help_text
            assert "l  back to the live step" in help_text

    run(scenario)


def _sparkline_bars(app: InspectorApp) -> str:
    """The sparkline's bars as drawn (Content, or a Rich renderable printed at its width)."""
    sparkline = app.query_one("#history-sparkline")
    rendered = sparkline.render()
    if isinstance(rendered, Content):
        return rendered.plain
    console = Console(width=sparkline.size.width, file=io.StringIO())
    with console.capture() as captured:
        console.print(rendered, end="")
    return captured.get()


def test_the_cos_history_is_drawn_from_minus_one_to_one_so_stuck_at_one_looks_stuck(source, make):
    """Means between 0.997 and 1.000 are all at the top; fitted to its data, the sparkline drew
    them as jumps from the bottom to the top. Only a real drop (to −1 here) reaches the bottom."""

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello())
            means = [0.997, 1.0, 0.998, 1.0, 0.9985, 0.999]
            source.feed(*(make.step1(paused=False, step=i, mean=m) for i, m in enumerate(means)))
            await until(pilot, lambda: len(app.query_one(SimilarityHistory).values) == len(means))
            await pilot.pause()
            bars = _sparkline_bars(app)
            assert bars and set(bars) <= {"▇", "█"}, bars
            source.feed(make.step1(paused=True, step=len(means), mean=-1.0))
            await until(pilot, lambda: "paused" in status(app))
            await pilot.pause()
            bars = _sparkline_bars(app)
            assert bars.endswith("▁") and set(bars) <= {"▇", "█", "▁"}, bars

    run(scenario)
