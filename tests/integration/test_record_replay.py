"""Recording real runs and replaying them in the real app, as a user would.

``check --record`` writes a trace beside an unchanged report; a script killed by a signal, or a
recording whose own process is killed, still leaves every step reached; the interactive mode
records through a wrapper the app never knows about; and ``InspectorApp(TraceSource(path))``
shows the recorded steps, ending where the run ended. ``cossim-tui replay`` refuses, with exit
status 2 and one line, anything that is not a trace.
"""

from __future__ import annotations

import asyncio
import msgspec.structs
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Digits

from cossim_tui import protocol
from cossim_tui.launcher import Run
from cossim_tui.session.events import ChannelProblem, OutputReceived, ScriptExited, Target
from cossim_tui.protocol import AgentConfig
from cossim_tui.report import call_entry
from cossim_tui.session.replay import CUT_SHORT, TraceSource, read_trace
from cossim_tui.session.trace import RecordingSource, TraceWriter
from cossim_tui.tui.app import InspectorApp
from cossim_tui.tui.widgets.status_bar import StatusBar
from cossim_tui.tui.widgets.tensor_panel import TensorPanel
from integration.live import FIXTURES, REPO, START_TIMEOUT, run_check
from waiting import until as wait_until
from waiting import until_async

# A module-scoped run serves two tests: they run on one worker (pyproject's loadgroup), so that it
# runs once; the other tests go wherever a worker is free. The check without --record is
# test_check's check of same_object.py (integration/conftest.py): its test is in the group too.
RECORDED = pytest.mark.xdist_group("recorded-check")
KILLED = pytest.mark.xdist_group("killed-recording")

F = "tests/fixtures/"
SIZE = (100, 30)


def status(app: InspectorApp) -> str:
    rendered = app.query_one(StatusBar).render()
    assert isinstance(rendered, Content)
    return rendered.plain


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    await until_async(pilot.pause, condition, timeout, lambda: f"the app; status bar says: {status(pilot.app)!r}")  # type: ignore[arg-type]


def assert_shows(app: InspectorApp, step: protocol.StepCaptured) -> None:
    """The panels show ``step``: its expressions, its similarity, its number."""
    assert app.current is not None and app.current.step == step.step
    assert app.query_one("#left-tensor", TensorPanel).border_title == step.args[0].expr
    assert app.query_one("#right-tensor", TensorPanel).border_title == step.args[1].expr
    assert f"step {step.step} · {step.function}" in str(app.query_one("#relation").border_title)
    assert step.cos is not None
    assert app.query_one("#mean-cos", Digits).value == f"{step.cos.mean:.4f}"


def without_pause(step: protocol.StepCaptured) -> dict:
    body = protocol.to_builtins(step)
    body.pop("paused")
    return body


# --------------------------------------------------------------------------------------
# check --record
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded_check(tmp_path_factory, same_object_checked):
    """``check`` of same_object.py twice: with ``--record`` and without it (its report is
    ``plain.json``)."""
    out = tmp_path_factory.mktemp("record")
    with_trace = run_check("--record", str(out / "run.jsonl"), "--json", str(out / "with.json"), F + "same_object.py")
    plain, plain_report = same_object_checked
    (out / "plain.json").write_bytes(plain_report.read_bytes())
    return out, with_trace, plain


@RECORDED
def test_check_record_writes_a_trace_whose_steps_are_the_reports(recorded_check):
    out, result, _ = recorded_check
    assert result.returncode == 1, result.stderr
    trace = read_trace(out / "run.jsonl")
    report = json.loads((out / "with.json").read_text())

    assert trace.header.script == F + "same_object.py" and trace.header.argv == [F + "same_object.py"]
    assert len(trace.steps) == report["steps"] == 2
    assert [json.loads(protocol.encode_for_tools(call_entry(step))) for step in trace.steps] == report["calls"]
    assert [f.code for f in trace.steps[1].findings] == ["same-object"]
    assert trace.exited == ScriptExited("finished", 0, None, None)
    # Everything else the run said is there too, in order.
    kinds = [type(e).__name__ for e in trace.events if not isinstance(e, OutputReceived)]
    assert kinds[:2] == ["Hello", "TorchHooked"] and kinds[-2:] == ["ScriptEnded", "ScriptExited"]
    assert not any(isinstance(e, ChannelProblem) for e in trace.events)
    output = "".join(e.text for e in trace.events if isinstance(e, OutputReceived))
    assert result.stdout.startswith(output) and "same object: 1.0000" in output


@RECORDED
def test_check_record_leaves_the_report_and_exit_status_unchanged(recorded_check):
    out, with_trace, plain = recorded_check
    assert with_trace.returncode == plain.returncode == 1
    assert json.loads((out / "with.json").read_text()) == json.loads((out / "plain.json").read_text())
    summary = [line for line in with_trace.stdout.splitlines() if "report:" not in line]
    assert summary == [line for line in plain.stdout.splitlines() if "report:" not in line]
    assert with_trace.stderr == plain.stderr == ""


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory):
    """``check --record killed.jsonl kill_after_steps.py`` (the script kills itself after three
    steps): its result and the trace's path, for the two tests that read it."""
    trace_path = tmp_path_factory.mktemp("killed") / "killed.jsonl"
    return run_check("--record", str(trace_path), F + "kill_after_steps.py"), trace_path


@KILLED
def test_a_script_killed_by_sigkill_leaves_every_step_it_reached(killed_recording):
    result, trace_path = killed_recording
    assert result.returncode == 3, result.stdout + result.stderr

    trace = read_trace(trace_path)
    assert [s.step for s in trace.steps] == [0, 1, 2]
    assert trace.exited == ScriptExited("killed", None, signal.SIGKILL, None)
    output = "".join(e.text for e in trace.events if isinstance(e, OutputReceived))
    assert output.splitlines() == [f"call {i}: {s.cos.mean:.4f}" for i, s in enumerate(trace.steps)]


def test_a_script_killed_by_sigkill_loses_at_most_its_last_64_calls(tmp_path):
    """Under check the agent may summarise small pairs behind the script (parked calls): a
    script killed at once after its last call loses the steps still parked, never more than 64."""
    trace_path = tmp_path / "killed.jsonl"
    result = run_check("--record", str(trace_path), F + "kill_after_many_calls.py", "400")
    assert result.returncode == 3, result.stdout + result.stderr
    trace = read_trace(trace_path)
    steps = [s.step for s in trace.steps]
    assert steps == list(range(len(steps))) and len(steps) >= 400 - 64
    assert trace.exited == ScriptExited("killed", None, signal.SIGKILL, None)


def test_a_script_killed_before_any_step_leaves_its_output_and_end(tmp_path):
    trace_path = tmp_path / "kill_self.jsonl"
    assert run_check("--record", str(trace_path), F + "kill_self.py").returncode == 3
    trace = read_trace(trace_path)
    assert trace.steps == []
    assert "".join(e.text for e in trace.events if isinstance(e, OutputReceived)) == "killing myself\n"
    assert trace.exited.status == "killed" and trace.exited.signal == signal.SIGKILL


def test_check_record_to_an_unwritable_path_does_not_start_the_script(tmp_path):
    result = run_check("--record", str(tmp_path / "missing-dir" / "t.jsonl"), F + "same_object.py")
    assert result.returncode == 2
    assert result.stdout == ""  # the script never ran
    assert result.stderr.startswith("cossim-tui: error: cannot write the trace ") and result.stderr.count("\n") == 1


def test_check_record_refuses_to_overwrite_the_script(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('trained')\n")
    result = run_check("--record", str(script), str(script))
    assert result.returncode == 2 and result.stdout == ""
    assert "would overwrite the script itself" in result.stderr
    assert script.read_text() == "print('trained')\n"


def _steps_on_disk(path: Path) -> int:
    return path.read_bytes().count(b'{"kind":"step"') if path.exists() else 0


def test_a_recording_whose_own_process_is_killed_replays_up_to_the_crash(tmp_path):
    """cossim-tui itself dies mid-run (OOM killer, closed laptop): the trace so far still replays."""
    trace_path = tmp_path / "crash.jsonl"
    check = subprocess.Popen(
        [sys.executable, "-m", "cossim_tui", "check", "--record", str(trace_path), F + "cosine_loop.py", "--count", "100000", "--sleep", "0.02"],
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child: int | None = None
    try:
        wait_until(lambda: _steps_on_disk(trace_path) >= 3, START_TIMEOUT, "3 steps recorded")
        hello = json.loads(trace_path.read_bytes().splitlines()[1])
        assert hello["kind"] == "hello"
        child = hello["pid"]
        check.kill()
        check.wait(10)
    finally:
        if check.poll() is None:
            check.kill()
            check.wait(10)
        if child is not None:
            # The script leads its own process group; without its launcher it must not linger.
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    trace = read_trace(trace_path)
    steps = trace.steps
    assert len(steps) >= 3 and [s.step for s in steps] == list(range(len(steps)))
    assert trace.exited.status == "error" and trace.exited.exception == CUT_SHORT

    async def scenario():
        app = InspectorApp(TraceSource(trace_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.exited is not None)
            assert app.model.step_count == len(steps)
            assert_shows(app, steps[-1])
            assert app.model.phase == "failed"
            assert "the recording was cut short" in status(app)

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------
# Replay in the real app
# --------------------------------------------------------------------------------------


@KILLED
def test_replay_of_a_killed_run_shows_the_last_step_and_how_it_ended(killed_recording):
    result, trace_path = killed_recording
    assert result.returncode == 3
    recorded = read_trace(trace_path).steps

    async def scenario():
        app = InspectorApp(TraceSource(trace_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.exited is not None)
            assert_shows(app, recorded[-1])
            assert app.model.step_count == 3 and [s.step for s in app.model.steps] == [0, 1, 2]
            assert app.model.exited == ScriptExited("killed", None, signal.SIGKILL, None)
            assert app.model.phase == "failed"
            text = status(app)
            assert "killed by signal 9 (SIGKILL)" in text and "3 steps" in text
            assert "replay of killed.jsonl" in text
            # Nothing runs: stepping keys do nothing, and the app stays on the last step.
            await pilot.press("n", "c", "r")
            assert app.current is not None and app.current.step == 2

    asyncio.run(scenario())


def test_record_then_replay_shows_the_recorded_steps(tmp_path):
    """Round trip: what a real run captured is what the replay puts on screen, step by step."""
    trace_path = tmp_path / "same_object.jsonl"
    run = Run(Target(script=str(FIXTURES / "same_object.py")), AgentConfig(mode="run"))
    writer = TraceWriter(trace_path, run.target)
    try:
        recorded = list(RecordingSource(run, writer).events())
    finally:
        run.terminate()
    assert read_trace(trace_path).events == recorded
    steps = [e for e in recorded if isinstance(e, protocol.StepCaptured)]
    assert [s.step for s in steps] == [0, 1]

    async def scenario():
        app = InspectorApp(TraceSource(trace_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.exited is not None)
            assert app.current == msgspec.structs.replace(steps[-1], paused=True)
            assert_shows(app, steps[-1])
            assert app.query_one("#left-tensor", TensorPanel).border_title == "embedding"
            assert app.model.exited == ScriptExited("finished", 0, None, None)
            assert app.model.phase == "ended" and "finished (exit code 0)" in status(app)
            # Every earlier step is there to browse, exactly as recorded.
            assert app.view_step(0)
            await pilot.pause()
            assert without_pause(app.current) == without_pause(steps[0])
            assert_shows(app, steps[0])

    asyncio.run(scenario())


def test_interactive_recording_through_the_app(tmp_path):
    """The app is handed the run wrapped in a RecordingSource (what ``--record`` does)."""
    trace_path = tmp_path / "stepped.jsonl"
    run = Run(Target(script=str(FIXTURES / "cosine_loop.py"), args=["--count", "3"]), AgentConfig(mode="step"))
    writer = TraceWriter(trace_path, run.target)

    async def record():
        app = InspectorApp(RecordingSource(run, writer))
        async with app.run_test(size=SIZE) as pilot:
            for number in range(3):
                await until(pilot, lambda: app.model.phase == "paused" and app.model.latest is not None and app.model.latest.step == number)
                await pilot.press("n")
            await until(pilot, lambda: app.model.exited is not None)
            assert app.model.exited.status == "finished"

    try:
        asyncio.run(record())
    finally:
        run.terminate()
        writer.close()

    trace = read_trace(trace_path)
    assert [(s.step, s.paused) for s in trace.steps] == [(0, True), (1, True), (2, True)]
    assert trace.exited == ScriptExited("finished", 0, None, None)

    async def replay():
        app = InspectorApp(TraceSource(trace_path))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.exited is not None)
            assert [(s.step, s.paused) for s in app.model.steps] == [(0, False), (1, False), (2, True)]
            assert_shows(app, trace.steps[-1])
            assert app.model.phase == "ended"

    asyncio.run(replay())


# --------------------------------------------------------------------------------------
# cossim-tui replay: what it refuses
# --------------------------------------------------------------------------------------


def _replay(path: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cossim_tui", "replay", str(path)],
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(lambda d: d / "missing.jsonl", "no such file", id="missing"),
        pytest.param(lambda d: d, "directory", id="directory"),
        pytest.param(lambda d: (d / "empty.jsonl", (d / "empty.jsonl").write_text(""))[0], "empty", id="empty"),
        pytest.param(lambda d: REPO / F / "same_object.py", "not a cossim-tui trace", id="a-script"),
        pytest.param(
            lambda d: (d / "r.json", (d / "r.json").write_text(json.dumps({"schema": "cossim-tui/report/1", "steps": 0})))[0],
            "report, not a trace",
            id="a-check-report",
        ),
        pytest.param(lambda d: (d / "b.jsonl", (d / "b.jsonl").write_bytes(os.urandom(4096)))[0], "not a cossim-tui trace", id="binary"),
    ],
)
def test_replay_refuses_what_is_not_a_trace_with_status_2(tmp_path, make, says):
    result = _replay(make(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("cossim-tui: error: cannot replay ") and result.stderr.count("\n") == 1
    assert says in result.stderr


def test_replay_appears_in_help():
    result = subprocess.run([sys.executable, "-m", "cossim_tui", "--help"], capture_output=True, text=True, cwd=str(REPO), timeout=60)
    assert "cossim-tui replay TRACE.jsonl" in " ".join(result.stdout.split())
    assert "--record PATH" in result.stdout
    check = subprocess.run([sys.executable, "-m", "cossim_tui", "check", "--help"], capture_output=True, text=True, cwd=str(REPO), timeout=60)
    assert "--record PATH" in check.stdout
