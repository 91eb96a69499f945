"""Every way a run can go wrong is shown clearly and loses nothing (issue: robustness).

Workers and pools, a script that hangs, endless output, and a channel that carries garbage,
on real children. Odd tensors need no child: ``tests/agent/test_robustness.py``."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
from pathlib import Path


from cossim_tui.launcher import Run
from cossim_tui.session.events import ChannelProblem, OutputReceived, ScriptExited, Target
from cossim_tui.protocol import AgentConfig
from integration.live import FIXTURES, group_members, wait_group_gone
from waiting import until_async


def test_workers_and_pools_never_report_and_threads_do(start_run) -> None:
    live = start_run(FIXTURES / "workers_and_threads.py")
    exited = live.wait_exit(timeout=180)
    assert exited.status == "finished", live.output
    assert "batches 2" in live.output and "pool 4" in live.output and "thread done" in live.output
    assert len(live.steps) == 1  # only the main process's thread call


def test_a_hanging_script_still_ends_when_asked(start_run) -> None:
    live = start_run(FIXTURES / "hang_after_first_call.py")
    live.next_step()
    live.wait_output("spinning")
    start = time.monotonic()
    live.run.terminate()
    assert wait_group_gone(live.pid, timeout=2.0) == []
    assert time.monotonic() - start < 2.0
    assert live.wait_exit(timeout=5).status == "quit"


def test_endless_output_without_newlines_arrives_whole(start_run) -> None:
    live = start_run(FIXTURES / "endless_line.py")
    exited = live.wait_exit(timeout=120)
    assert exited.status == "finished"
    assert live.output.count("x") == 320 * 65536
    assert len(live.steps) == 1


def test_garbage_on_the_channel_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    """A peer that writes a valid frame with a wrong message, then noise, then exits."""
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(
        "#!/bin/sh\n"
        f'exec {sys.executable} -c "'
        "import os, struct, json; fd = int(os.environ['COSSIM_TUI_FD']);"
        "body = json.dumps({'kind': 'step', 'step': 'zero'}).encode();"
        "os.write(fd, struct.pack('>I', len(body)) + body);"
        "os.write(fd, struct.pack('>I', 3) + b'{{{');"
        "print('still here')\"\n"
    )
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    run = Run(Target(script="ignored.py"), AgentConfig(mode="run"), python=str(fake_python))
    try:
        events = list(run.events())
    finally:
        run.terminate()
    problems = [e.reason for e in events if isinstance(e, ChannelProblem)]
    assert len(problems) == 2 and "step" in problems[0] and "not JSON" in problems[1]
    assert "still here" in "".join(e.text for e in events if isinstance(e, OutputReceived))
    assert isinstance(events[-1], ScriptExited)


def test_quitting_the_app_while_the_script_hangs(tmp_path: Path) -> None:
    """The real app on a real run: q ends a script stuck between calls within a second or two."""
    from cossim_tui.tui.app import InspectorApp

    run = Run(Target(script=str(FIXTURES / "hang_after_first_call.py")), AgentConfig(mode="run"))

    async def drive() -> float:
        app = InspectorApp(run)
        async with app.run_test(size=(100, 30)) as pilot:
            await until_async(pilot.pause, lambda: app.model.step_count > 0, 60, "the first step")
            assert app.model.step_count == 1
            start = time.monotonic()
            await pilot.press("q")
            await pilot.pause(0.1)
        return time.monotonic() - start

    try:
        took = asyncio.run(drive())
    finally:
        run.terminate()
    assert took < 2.5
    assert group_members(run.pid) == []


def test_torch_compile_runs_unchanged_and_says_what_it_sees(start_run) -> None:
    plain = subprocess.run([sys.executable, str(FIXTURES / "compiled.py")], capture_output=True, text=True, timeout=300)
    live = start_run(FIXTURES / "compiled.py")
    exited = live.wait_exit(timeout=300)
    assert exited.status == "finished", live.output
    printed = [line for line in live.output.splitlines() if line.startswith(("compiled", "eager"))]
    assert printed == plain.stdout.splitlines()
    assert "torch.compile traced a cosine call" in live.output
    # With the eager backend the compiled call still runs through us, with real tensors.
    assert len(live.steps) == 2 and all(step.cos is not None for step in live.steps)
