"""A similarity matrix step on screen: its heat map, positives against negatives, and the
hardest negatives with their row numbers; a pairwise step shows none of it."""

from __future__ import annotations

import msgspec.structs

from cossim_tui import protocol
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.widgets.matrix_view import MatrixView

from .test_app import SIZE, run, status, text_of, until

FIGURES = protocol.MatrixFigures(
    rows=8,
    columns=8,
    positives=protocol.Spread(min=0.91, mean=0.97, max=0.99),
    negatives=protocol.Spread(min=-0.52, mean=0.12, max=0.74),
    heat=[[1.0, -1.0, 0.1], [0.5, 0.97, -0.3]],
    heat_positive=[[True, False, False], [False, True, False]],
    hardest=[protocol.HardNegative(row=5, column=3, value=0.74), protocol.HardNegative(row=1, column=7, value=0.61)],
    duplicates=[[0, 3, 5]],
)


def test_a_matrix_step_shows_its_heat_map_positives_negatives_and_hardest_negatives(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=(140, 50)) as pilot:
            step = msgspec.structs.replace(make.step0(), function="matmul", matrix=FIGURES)
            source.feed(make.hello(), step)
            await until(pilot, lambda: "paused at step 0" in status(app))
            view = app.query_one(MatrixView)
            assert view.display
            lines = text_of(view).splitlines()
            assert lines[0] == "matrix 8×8 · positives by diagonal"
            assert lines[1].startswith("positives 0.9700") and "0.9100 … 0.9900" in lines[1]
            assert lines[2].startswith("negatives 0.1200") and "-0.5200 … 0.7400" in lines[2]
            # One shaded cell (two columns) per entry: 1 is a full block, -1 blank.
            assert lines[3] == "  0 ██  ▒▒" and lines[4].startswith("  1 ▓▓██")
            assert "row 5 × col 3 0.7400" in text_of(view) and "row 1 × col 7 0.6100" in text_of(view)
            assert "side 1: rows 3 and 5 are equal" in text_of(view)

    run(scenario)


def test_a_pairwise_step_has_no_matrix_view(source, make):
    async def scenario():
        app = InspectorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            source.feed(make.hello(), make.step0())
            await until(pilot, lambda: "paused at step 0" in status(app))
            assert not app.query_one(MatrixView).display

    run(scenario)
