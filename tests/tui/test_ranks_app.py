"""The app fed a two-rank job's events (as ``job.JobRun`` stamps them): rank 0 shown first, the
rank bar, switching ranks, one command for every rank, and the view across ranks."""

from __future__ import annotations

import asyncio

from builders import rank_hello, rank_step
from textual.widget import Widget

from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.screens.across_ranks import AcrossRanksScreen
from cossim_tui.tui.widgets.rank_bar import RankBar
from waiting import until_async

from .test_app import SIZE, run, until


def test_the_app_shows_rank_0_first_and_switches_ranks(source):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(rank_hello(1), rank_hello(0), rank_step(1, 0, 0.2, paused=True), rank_step(0, 0, 0.1, paused=True))
            await until(pilot, lambda: 0 in app.job.models and app.job.models[0].latest is not None and app.current is not None)
            assert app.job.shown == 0 and app.model is app.job.models[0] and app.current.rank == 0
            bar = app.query_one(RankBar)
            await until(pilot, lambda: len(bar.ranks) == 2)
            assert list(bar.ranks) == [(0, "paused at step 0", True), (1, "paused at step 0", False)]
            await pilot.press("k")
            assert app.job.shown == 1 and app.current.rank == 1 and app.current.args[0].stats.mean == 0.2
            await pilot.press("0")
            assert app.job.shown == 0 and app.current.rank == 0
            await pilot.press("n")
            # One command: the job's source hands it to every rank.
            assert [type(m).__name__ for m in source.sent] == ["Resume"]
            source.feed(rank_step(0, 1, 0.3, paused=True), rank_step(1, 1, 0.3, paused=True))
            await until(pilot, lambda: app.current is not None and app.current.step == 1)
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AcrossRanksScreen))
            shown = str(app.screen.query_one("#across-table").render())
            assert "across ranks · step 1" in shown and "equal anchor, partner to rank 0's" in shown
            await pilot.press("escape", "question_mark")
            await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
            assert ("k, 0-9", "a") == tuple(key for key, _ in app.screen.keys if key in ("k, 0-9", "a"))

    run(scenario)


def test_a_single_process_has_no_rank_keys_or_bar(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step1())
            await until(pilot, lambda: app.current is not None)
            assert app.query_one(RankBar).display is False
            assert app.check_action("next_rank", ()) is False
            await pilot.press("k")
            assert app.job.models == {}

    run(scenario)


def test_the_ranks_timer_ticking_while_the_app_closes_is_no_error(source):
    """The rank bar's half-second timer ("waiting for rank N") is the app's: under ``run_test``
    Textual closes the screens before the app's own timers, so it can tick after the bar has
    gone. That tick does nothing; it failed the app (NoMatches), and a test now and then.

    A widget beside the bar holds the screen's closing until the timer has ticked once with
    the bar gone (within half a second)."""
    ticked_without_the_bar = asyncio.Event()

    class HoldsTheClosing(Widget):
        async def on_unmount(self) -> None:
            await until_async(asyncio.sleep, ticked_without_the_bar.is_set, 10, "the ranks' timer to tick with the bar gone")

    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            bar = app.query_one(RankBar)
            show_ranks = app._show_ranks

            def observed() -> None:
                if bar.parent is None:
                    ticked_without_the_bar.set()
                show_ranks()

            app._show_ranks = observed  # the timer the first hello starts calls this
            await app.screen.mount(HoldsTheClosing())
            source.feed(rank_hello(0), rank_hello(1), rank_step(0, 0, 0.1, paused=True))
            await until(pilot, lambda: len(app.query_one(RankBar).ranks) == 2)
        assert ticked_without_the_bar.is_set()

    run(scenario)
