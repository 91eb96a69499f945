"""``cossim-tui SCRIPT``: start the run, hand it to the app, and make sure it ends with us.

The child is started before the app so that torch loads while the screen comes up. Whatever
way the app ends (quit, an exception, a closed terminal), the child's process group is ended
before we return.
"""

from __future__ import annotations

import argparse

from cossim_tui.launcher import Run, Target
from cossim_tui.protocol import AgentConfig
from cossim_tui.tui.app import InspectorApp


def run_interactive(target: Target, options: argparse.Namespace) -> int:
    run = Run(target, AgentConfig(mode="step", break_on=list(options.break_on), ignore=list(options.ignore), watch=list(options.watch)))
    try:
        app = InspectorApp(run, break_on=",".join(options.break_on))
        app.run()
    finally:
        run.terminate()
    if run.exited is not None and run.exited.status == "not-found":
        print(f"cossim-tui: error: {run.exited.exception}")
        return 2
    return 0
