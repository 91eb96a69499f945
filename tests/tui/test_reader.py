"""The reader's batching: order kept, steps and output grouped, the end always reported."""

from __future__ import annotations

from textual.message import Message

from cossim_tui.tui.messages import ChannelFailed, OutputArrived, RunEnded, RunStarted, StepsReceived
from cossim_tui.tui.reader import STREAM_ENDED_EARLY, EventForwarder


def forward_all(events, take_after: frozenset[int] = frozenset()) -> list[Message]:
    """Forward ``events``; the app 'takes' the open batch after the indices in ``take_after``."""
    posted: list[Message] = []
    forwarder = EventForwarder(posted.append)
    for index, event in enumerate(events):
        forwarder.forward(event)
        if index in take_after:
            message = posted[-1]
            message.take()  # type: ignore[attr-defined]
    forwarder.finish()
    return posted


def test_steps_waiting_for_the_app_travel_in_one_message(make):
    posted = forward_all([make.hello()] + [make.step1(paused=False, step=i) for i in range(50)] + [make.exited()])
    assert [type(m) for m in posted] == [RunStarted, StepsReceived, RunEnded]
    assert [s.step for s in posted[1].take()] == list(range(50))  # type: ignore[attr-defined]


def test_a_batch_the_app_has_taken_is_never_added_to(make):
    steps = [make.step1(paused=False, step=i) for i in range(4)]
    posted = forward_all(steps + [make.exited()], take_after=frozenset({1}))
    assert [type(m) for m in posted] == [StepsReceived, StepsReceived, RunEnded]
    # The first batch was taken after two steps; the rest went into a new one.
    assert [s.step for s in posted[1].take()] == [2, 3]  # type: ignore[attr-defined]


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
    posted = forward_all(events)
    kinds = [OutputArrived, StepsReceived, OutputArrived, ChannelFailed, OutputArrived, RunEnded]
    assert [type(m) for m in posted] == kinds
    assert posted[0].take() == ["a", "b\n"]  # type: ignore[attr-defined]


def test_a_stream_without_an_exit_still_ends_the_run(make):
    posted = forward_all([make.hello()])
    assert isinstance(posted[-1], RunEnded)
    assert posted[-1].exited.description == f"failed: {STREAM_ENDED_EARLY}"


def test_an_unexpected_event_is_reported_as_a_channel_problem():
    posted = forward_all([object()])
    assert isinstance(posted[0], ChannelFailed)
    assert "unexpected event from the run: object" in posted[0].problem.reason
