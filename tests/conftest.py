"""The tests' shared helpers (``waiting``, ``builders``, ``agent_harness``) live next to this file;
pytest puts this directory on ``sys.path`` for it, so every test directory imports them the same
way, whichever of them is run alone.

The folders mirror ``src/cossim_tui``: ``agent/``, ``diagnostics/``, ``protocol/``, ``session/``,
``tui/``, and this folder for the top-level modules (cli, report, explain, the layers). Tests of
the agent run scripts in this process (``agent_harness``); ``integration/`` holds what needs a
real child (the command line, exit statuses, the report file, the script's identity, quitting
and killing, output, workers), and ``e2e/`` drives the installed command in tmux."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def start_script() -> Iterator[Any]:
    """``start_script(script, *args, config=..., cwd=...)`` -> ``agent_harness.ScriptThread``:
    the script under the agent in this process, driven as a real run is; ended at teardown."""
    from agent_harness import ScriptThread

    started: list[ScriptThread] = []

    def start(script: str | Path, *args: str, config: Any, cwd: Path | None = None) -> ScriptThread:
        live = ScriptThread(Path(script), args, config, cwd)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()
