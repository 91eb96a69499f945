"""``cossim-tui SCRIPT`` and ``cossim-tui replay TRACE``: hand the app its event source.

The child is started (``cli.main``) before the app's modules are imported, and given its go
once they are, so that torch loads while the screen comes up. Whatever way the app ends
(quit, an exception, a closed terminal), the child's process group is ended before we
return. With ``--record`` the app is handed the run wrapped in a
``RecordingSource``, which writes each event before the app sees it; the app itself
knows nothing of recording. A replay hands it a ``TraceSource`` instead: nothing runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Protocol

from cossim_tui.protocol import AgentConfig
from cossim_tui.session.config import interactive_config
from cossim_tui.session.events import EventSource, ScriptExited, Target
from cossim_tui.session.exits import EXIT_CANNOT_START, EXIT_OK
from cossim_tui.session.replay import TraceSource
from cossim_tui.session.trace import RecordingSource, TraceError, TraceWriter, recording


class StartedRun(EventSource, Protocol):
    """A child started early and waiting for its settings (``launcher.Run``), as the app uses it."""

    target: Target
    exited: ScriptExited | None

    def start(self, config: AgentConfig) -> None: ...


def run_interactive(run: StartedRun, options: argparse.Namespace) -> int:
    """Inspect ``run``, a child started early (``Run.early``) and waiting for its settings."""
    try:
        with recording(options.record, run.target, screen="textual") as recorder:
            return _inspect(run, options, recorder)
    except TraceError as exc:
        # The trace could not be opened: a bad argument, and the script never started.
        run.terminate()
        print(f"cossim-tui: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


def _inspect(run: StartedRun, options: argparse.Namespace, recorder: TraceWriter | None) -> int:
    try:
        # The app's modules load before the script's go: started together, the two imports (the
        # app's and torch's) share the two CPUs and the first frame came 0.36 → 0.50 s after the
        # command, while step 0 came no sooner (torch's import sets when it comes).
        from cossim_tui.tui.app import InspectorApp

        run.start(interactive_config(options))
        source: EventSource = run if recorder is None else RecordingSource(run, recorder)
        app = InspectorApp(source, break_on=",".join(options.break_on))
        app.run()
    finally:
        run.terminate()
    if run.exited is not None and run.exited.status == "not-found":
        print(f"cossim-tui: error: {run.exited.exception}")
        return EXIT_CANNOT_START
    return EXIT_OK


def run_replay(path: str) -> int:
    """Open the trace at ``path``; exit status 2, said in one line, when it is not one."""
    try:
        source = TraceSource(path)
    except TraceError as exc:
        print(f"cossim-tui: error: cannot replay {path}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    from cossim_tui.tui.app import InspectorApp

    InspectorApp(source, replay=True).run()
    return EXIT_OK
