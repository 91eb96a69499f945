"""Makes the README's screenshots from real runs of the bundled demos.

    python docs/screens.py

Each picture is the real app (driven by textual's Pilot) on a real run of a demo: the article's
loop paused at its first stale partner, its history plot and embedding map after a free run
to the end, and the embedding map of the fixed loop. The demos are seeded, so the pictures
change only when the demos or the screens do.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from cossim_tui.launcher import Run
from cossim_tui.session.events import Target
from cossim_tui.protocol import AgentConfig
from cossim_tui.tui.app import InspectorApp

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
SIZE = (120, 36)


async def _until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo did not get there in time")
        await asyncio.sleep(0.05)


async def _screens(demo: str, shots: list[tuple[str, str]]) -> None:
    """Run ``demo``; for each (moment, file): get there, then save the screen as ``file``.

    Moments: ``step`` (press n once), ``end`` (run freely to the end), ``plot``, ``map``."""
    run = Run(Target(script=f"demo/{demo}"), AgentConfig(mode="step"))
    app = InspectorApp(run)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _until(lambda: app.model.phase == "paused")
            for moment, name in shots:
                if moment == "step":
                    await pilot.press("n")
                    await _until(lambda: app.model.phase == "paused" and app.current is not None and app.current.step == 1)
                elif moment == "end":
                    await pilot.press("r")
                    await _until(lambda: app.model.phase in ("ended", "failed"))
                    await _until(lambda: app.current is app.model.latest)
                elif moment in ("plot", "map"):
                    await pilot.press("g" if moment == "plot" else "e")
                await pilot.pause()
                if name:
                    app.save_screenshot(filename=name, path=str(DOCS))
                    print(f"docs/{name}")
                if moment in ("plot", "map"):
                    await pilot.press("g" if moment == "plot" else "e")  # back to the panels
            await pilot.press("q")
    finally:
        run.terminate()


def main() -> None:
    asyncio.run(
        _screens(
            "siamese_stale_partner.py",
            [("step", "stale-partner-paused.svg"), ("end", ""), ("plot", "stale-partner-plot.svg"), ("map", "stale-partner-map.svg")],
        )
    )
    asyncio.run(_screens("siamese_fixed.py", [("end", ""), ("map", "fixed-map.svg")]))


if __name__ == "__main__":
    os.chdir(REPO)  # the screens name the demo as the README's commands do: demo/...
    main()
