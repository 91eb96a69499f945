"""``cossim-tui check``: the same run and diagnosis as the TUI, headless, for CI and scripts.

The script runs freely (it never waits for a user); its output passes straight through to
our stdout, and the summary follows it. The exit status is CONTRACT's: findings at or above
``--fail-on`` (1) take precedence over a failed script (3). With ``--record PATH`` every event
is also written to a trace as it arrives; the report and the exit status do not change.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

from cossim_tui.protocol import Hello, StepCaptured
from cossim_tui.session.config import check_config
from cossim_tui.session.events import (
    ChannelProblem,
    OutputReceived,
    RankLost,
    RunEvent,
    ScriptExited,
)
from cossim_tui.session.exits import EXIT_CANNOT_START, check_status

if TYPE_CHECKING:
    from cossim_tui.job import JobRun
    from cossim_tui.launcher import Run
    from cossim_tui.session.trace import TraceWriter

# The report and the trace are imported when they are needed, after the script has started:
# until then every millisecond here is one the script waits for (``check`` vs ``python``).


def run_check(run: Run | JobRun, options: argparse.Namespace) -> int:
    """Diagnose ``run``, a child started early (``Run.early``) and waiting for its settings."""
    if not options.record:
        return _check(run, options, None)
    from cossim_tui.session.trace import TraceError, recording

    try:
        with recording(options.record, run.target) as recorder:
            return _check(run, options, recorder)
    except TraceError as exc:
        # The trace could not be opened: a bad argument, and the script never started.
        run.terminate()
        print(f"cossim-tui: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


def _check(run: Run | JobRun, options: argparse.Namespace, recorder: TraceWriter | None) -> int:
    target = run.target
    run.start(check_config(options))
    from cossim_tui.report import ReportBuilder, write_report

    builder = ReportBuilder(target)
    exited: ScriptExited | None = None
    # Ctrl+C or a closed terminal must not leave the script running behind us.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        handlers = {
            OutputReceived: lambda event: _write(event.text),
            StepCaptured: builder.add,
            Hello: builder.hello,
            RankLost: lambda event: print(
                f"cossim-tui: rank {event.rank}{' on ' + event.host if event.host else ''} ended without finishing (killed, or its node was lost)",
                file=sys.stderr,
            ),
            ChannelProblem: lambda event: print(f"cossim-tui: bad message from the agent ignored: {event.reason}", file=sys.stderr),
        }
        for event in run.events():
            _record(recorder, event)
            if isinstance(event, ScriptExited):
                exited = event
                continue
            handle = handlers.get(type(event))
            if handle is not None:
                handle(event)
    except KeyboardInterrupt as interrupt:
        run.terminate()
        print("cossim-tui: interrupted; the script was ended", file=sys.stderr)
        # Ctrl+C, or the signal ``_raise_interrupt`` was given: the one that ended the run.
        exited = ScriptExited("killed", None, interrupt.args[0] if interrupt.args else signal.SIGINT, None)
        _record(recorder, exited)
    finally:
        run.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert exited is not None
    status = check_status(exited, builder.tally, options.fail_on)
    if exited.status == "not-found":
        print(f"cossim-tui: error: {exited.exception}", file=sys.stderr)
        return status
    if options.json:
        write_report(options.json, builder.report(exited))
    _write(builder.summary(exited) + "\n")
    if options.json:
        _write(f"  report: {options.json}\n")
    _write(f"  exit status {status}\n")
    return status


def _write(text: str) -> None:
    """Write to our stdout; once its reader has gone (``check ... | head``), the rest of the output
    goes nowhere, and the run, its report and its exit status go on as before."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # As Python's documentation advises: later writes, and the flush at exit, must not fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _record(recorder: TraceWriter | None, event: RunEvent) -> None:
    """Write ``event`` to the trace; if that fails, say so (once) and let the run go on."""
    failure = recorder.write(event) if recorder is not None else None
    if failure is not None:
        print(f"cossim-tui: error: {failure}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signum)
