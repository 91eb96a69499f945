"""The inspector's layout pinned as SVG screenshots (review the diff before ``--snapshot-update``).

Fixed data and no clock: each screenshot is taken once the fed step is on screen.
"""

from __future__ import annotations

import time

from textual.pilot import Pilot

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.widgets.status_bar import StatusBar


def wait_for_state(text: str):
    async def run_before(pilot: Pilot) -> None:
        status = pilot.app.query_one(StatusBar)
        deadline = time.monotonic() + 10
        while text not in status.state:
            assert time.monotonic() < deadline, f"never reached {text!r}; state is {status.state!r}"
            await pilot.pause(0.01)
        await pilot.pause()

    return run_before


def test_paused_at_step0_at_100x30(snap_compare, source, make):
    source.feed(
        make.hello(),
        make.output("epoch 0\n"),
        make.step0(),
    )
    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=wait_for_state("paused at step 0"))


def test_stale_partner_at_step1_at_160x50(snap_compare, source, make):
    source.feed(
        make.hello(),
        protocol.TorchHooked(version="2.4.1", intercepted=["F.cosine_similarity", "torch.cosine_similarity"]),
        make.output("epoch 0 batch 0 loss 0.6931\n"),
        make.step0(paused=False),
        make.output("epoch 0 batch 1 loss 0.6904\n"),
        make.step1(),
    )
    assert snap_compare(InspectorApp(source), terminal_size=(160, 50), run_before=wait_for_state("paused at step 1"))


def test_findings_summary_of_two_sites_at_100x30(snap_compare, source, make):
    source.feed(make.hello(), *make.two_sites(30))

    async def open_summary(pilot: Pilot) -> None:
        await wait_for_state("paused at step 29")(pilot)
        await pilot.press("f")
        await pilot.pause()

    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=open_summary)


def test_viewing_an_earlier_step_at_100x30(snap_compare, source, make):
    source.feed(make.hello(), make.output("epoch 0\n"), make.step0(paused=False), make.step1())

    async def jump_to_step0(pilot: Pilot) -> None:
        await wait_for_state("paused at step 1")(pilot)
        await pilot.press("f", "enter")  # the first row: same-object, first seen at step 0
        await pilot.pause()

    assert snap_compare(InspectorApp(source), terminal_size=(100, 30), run_before=jump_to_step0)
