"""Between the reader thread and the app: order kept, steps and output grouped, one wake-up for
everything waiting, what the app took never changed afterwards, and the end always reported.
The run's model (``RunView``) is driven here directly, without Pilot."""

from __future__ import annotations

from cossim_tui.session.events import ChannelProblem, ScriptExited
from cossim_tui.tui.model import OutputArrived, RunView, StepsArrived, grouped
from cossim_tui.tui.reader import STREAM_ENDED_EARLY, Arrivals


def read_all(events, take_after: frozenset[int] = frozenset()) -> tuple[list[tuple], int]:
    """Put ``events`` as the reader thread does; the app takes what waits after the indices in
    ``take_after`` and at the end. What each take returned, and how many wake-ups were posted."""
    wakes: list[None] = []
    arrivals = Arrivals(lambda: wakes.append(None))
    taken: list[tuple] = []
    for index, event in enumerate(events):
        arrivals.put(event)
        if index in take_after:
            taken.append(arrivals.take())
    arrivals.finish()
    taken.append(arrivals.take())
    return taken, len(wakes)


def test_steps_waiting_for_the_app_travel_together_after_one_wake_up(make):
    taken, wakes = read_all([make.hello()] + [make.step1(paused=False, step=i) for i in range(50)] + [make.exited()])
    assert wakes == 1
    groups = grouped(taken[0])
    assert [type(g) for g in groups] == [type(make.hello()), StepsArrived, ScriptExited]
    assert [s.step for s in groups[1].steps] == list(range(50))


def test_what_the_app_took_is_never_added_to(make):
    steps = [make.step1(paused=False, step=i) for i in range(4)]
    taken, wakes = read_all(steps + [make.exited()], take_after=frozenset({1}))
    # The first take came after two steps; the rest went into the next, after a wake-up of its own.
    assert [s.step for s in grouped(taken[0])[0].steps] == [0, 1]
    assert [s.step for s in grouped(taken[1])[0].steps] == [2, 3]
    assert wakes == 2
    assert isinstance(taken[0], tuple)  # immutable: the reader cannot reach it any more


def test_order_between_kinds_is_kept(make):
    events = [
        make.output("a"),
        make.output("b\n"),
        make.step0(paused=False),
        make.output("c"),
        make.problem("bad frame"),
        make.output("d"),
        make.exited(),
    ]
    taken, _ = read_all(events)
    groups = grouped(taken[0])
    kinds = [OutputArrived, StepsArrived, OutputArrived, ChannelProblem, OutputArrived, ScriptExited]
    assert [type(g) for g in groups] == kinds
    assert groups[0] == OutputArrived("ab\n")


def test_a_stream_without_an_exit_still_ends_the_run(make):
    taken, _ = read_all([make.hello()])
    last = taken[-1][-1]
    assert isinstance(last, ScriptExited)
    assert last.description == f"failed: {STREAM_ENDED_EARLY}"


def test_an_unexpected_event_reaches_the_app_in_its_place(make):
    """The app shows it as a channel problem (tests/tui/test_app.py drives that through Pilot)."""
    odd = object()
    taken, _ = read_all([make.hello(), odd, make.exited()])
    assert grouped(taken[0])[1] is odd


# --------------------------------------------------------------------------------------
# The run's model, without Pilot
# --------------------------------------------------------------------------------------


def test_the_model_follows_the_run_from_start_to_pause_to_end(make):
    run = RunView()
    assert run.phase == "starting"
    assert run.started(make.hello()) == ("running", "running")
    assert run.steps_arrived((make.step0(paused=False),)) == ("running", "running")
    assert run.steps_arrived((make.step1(paused=True),)) == ("paused", "paused at step 1")
    run.phase = "paused"
    assert run.step_count == 2 and run.latest is not None and run.latest.step == 1
    assert len(run.tally) >= 1  # step 1 of the stale-partner loop has findings
    assert run.run_ended(make.exited()) == ("ended", "finished (exit code 0)")
    run.phase = "ended"
    # A late step does not make a finished run look alive again.
    assert run.steps_arrived((make.step1(paused=False, step=2),)) is None and run.step_count == 3


def test_the_model_keeps_the_last_steps_and_says_which_can_be_viewed(make):
    run = RunView(kept=3)
    for number in range(6):
        run.steps_arrived((make.step1(paused=False, step=number),))
    assert [s.step for s in run.steps] == [3, 4, 5] and run.step_count == 6
    assert run.kept_step(4) is not None and run.kept_step(1) is None
    assert run.viewable(4) == 4
    assert run.viewable(5) is None  # the live step is not history
    assert run.viewable(1) is None  # no longer kept
    assert [s.step for s in run.take_undrawn()] == list(range(6)) and run.undrawn == []


def test_pausing_keeps_saying_so_until_the_pause_lands(make):
    run = RunView()
    run.phase = "pausing"
    assert run.steps_arrived((make.step1(paused=False, step=1),)) is None
    assert run.steps_arrived((make.step1(paused=True, step=2),)) == ("paused", "paused at step 2")


def test_a_step_asked_for_while_one_was_on_its_way_is_due_once_paused(make):
    run = RunView()
    run.steps_queued = 2
    run.phase = "running"
    assert run.next_queued_step() is False
    run.phase = "paused"
    assert run.next_queued_step() is True and run.steps_queued == 1
    run.run_ended(make.exited())
    assert run.steps_queued == 0 and run.stepping is False
