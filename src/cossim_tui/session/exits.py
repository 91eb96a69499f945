"""The exit statuses of CONTRACT.md, and how ``check`` picks one.

Findings at or above ``--fail-on`` (1) take precedence over a failed script (3); a run that
could not start is 2 whatever else happened.
"""

from __future__ import annotations

from cossim_tui.session.events import ScriptExited
from cossim_tui.session.findings import FindingTally

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_CANNOT_START = 2
"""cossim-tui could not start the run (bad arguments, script or module not found)."""
EXIT_SCRIPT_FAILED = 3


def check_status(exited: ScriptExited, tally: FindingTally, fail_on: str) -> int:
    if exited.status == "not-found":
        return EXIT_CANNOT_START
    if fail_on != "never" and tally.any_at_or_above(fail_on):
        return EXIT_FINDINGS
    if exited.failed:
        return EXIT_SCRIPT_FAILED
    return EXIT_OK
