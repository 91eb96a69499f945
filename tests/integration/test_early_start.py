"""A child started early (``Run.early``): it waits, its script unrun, until ``start`` hands it its
settings; ``terminate`` ends it if they never come. The commands start it that way, as a fork
of their own process where they can (``launcher.can_fork``). A fork is tried here from a fresh
interpreter, as the command makes it: a forked child's script ends by ``SystemExit`` through
the frames of whoever forked, which in this process would be pytest's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cossim_tui.launcher import Run
from cossim_tui.session.events import OutputReceived, ScriptExited, Target
from cossim_tui.protocol import AgentConfig, Hello, ScriptEnded
from integration.live import FIXTURES, REPO, run_check, run_plain
from waiting import blocked_reading_a_socket, processes_mentioning, until

TESTS = Path(__file__).resolve().parent.parent


def _marking_script(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    script = tmp_path / "mark.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\nprint('ran')\n")
    return script, marker


def test_an_early_child_runs_its_script_only_once_started(tmp_path):
    script, marker = _marking_script(tmp_path)
    run = Run.early(Target(script=str(script)))
    try:
        assert isinstance(run.process, subprocess.Popen)  # not asked to fork: a new interpreter
        # Ready, and waiting for its settings (a child that did not wait would be running its script).
        until(lambda: blocked_reading_a_socket(run.pid), 60, "the child to wait for its settings")
        assert not marker.exists() and run.process.poll() is None
        run.start(AgentConfig(mode="run"))
        events = list(run.events())
    finally:
        run.terminate()
    assert marker.exists()
    assert isinstance(events[0], Hello) and events[0].argv == [str(script)]
    assert any(isinstance(e, ScriptEnded) and e.status == "finished" for e in events)
    assert "".join(e.text for e in events if isinstance(e, OutputReceived)) == "ran\n"
    assert events[-1] == ScriptExited("finished", 0, None, None)


def test_an_early_child_never_started_is_ended_without_running_its_script(tmp_path):
    script, marker = _marking_script(tmp_path)
    run = Run.early(Target(script=str(script)))
    # (a child that did not wait would be running its script, not reading its channel)
    until(lambda: blocked_reading_a_socket(run.pid), 60, "the child to wait for its settings")
    run.terminate()
    assert run.process.poll() is not None
    assert not marker.exists()


HARNESS = textwrap.dedent(
    """
    import json, os, sys
    from cossim_tui.launcher import Run, can_fork
    sys.path.insert(0, TESTS)
    from waiting import blocked_reading_a_socket, until
    del sys.path[0]
    from cossim_tui.session.events import OutputReceived, Target
    from cossim_tui.protocol import AgentConfig

    marker, script, *args = sys.argv[1:]
    forkable = can_fork()
    run = Run.early(Target(script=script, args=args), fork=True)
    # Only this process gets here: the child leaves by SystemExit once its script ends.
    until(lambda: blocked_reading_a_socket(run.pid), 60, "the child to wait for its settings")
    ran_before_start = os.path.exists(marker)
    run.start(AgentConfig(mode="run"))
    events = list(run.events())
    run.terminate()
    exited = events[-1]
    print(json.dumps(dict(
        can_fork=forkable,
        process=type(run.process).__name__,
        ran_before_start=ran_before_start,
        output="".join(e.text for e in events if isinstance(e, OutputReceived)),
        exited=[exited.status, exited.exit_code, exited.signal],
    )))
    """
)


def _forked(tmp_path: Path, script: str, *args: str) -> dict:
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS.replace("TESTS", repr(str(TESTS)), 1))
    marker = tmp_path / "ran"
    done = subprocess.run(
        [sys.executable, str(harness), str(marker), script, *args],
        cwd=str(REPO), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # the child printed nothing of the harness's
    return json.loads(lines[0])


def test_a_forked_child_waits_then_runs_and_ends_as_its_script_did(tmp_path):
    script = tmp_path / "exits.py"
    marker = tmp_path / "ran"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            open({str(marker)!r}, 'w').close()
            print("own session:", os.getsid(0) == os.getpid(), "args:", sys.argv[1:])
            sys.exit(3)
            """
        )
    )
    seen = _forked(tmp_path, str(script), "--lr", "0.1")
    assert seen["can_fork"] is True and seen["process"] == "_ForkedChild"
    assert seen["ran_before_start"] is False
    assert seen["output"] == "own session: True args: ['--lr', '0.1']\n"
    assert seen["exited"] == ["finished", 3, None]


def test_a_forked_child_killed_by_a_signal_is_reported_killed(tmp_path):
    seen = _forked(tmp_path, str(FIXTURES / "kill_self.py"))
    assert seen["process"] == "_ForkedChild"
    assert seen["output"] == "killing myself\n"
    assert seen["exited"] == ["killed", None, 9]


def test_a_forked_child_whose_script_raises_prints_python_s_traceback(tmp_path):
    seen = _forked(tmp_path, str(FIXTURES / "raise_boom.py"))
    assert seen["process"] == "_ForkedChild"
    assert seen["exited"][:2] == ["error", 1]
    plain = run_plain([str(FIXTURES / "raise_boom.py")])
    # The script's own frames only, as python prints them: none of the launcher's or the harness's.
    assert seen["output"] == plain.stdout


def _output(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)


def test_the_command_forks_only_when_nothing_but_python_is_below_it(tmp_path):
    """Under a profiler (or a debugger, or a program that calls ``cli.command``) a fork's script
    would leave through their frames too: the child is a new interpreter there."""
    # The script says whether it runs in a new interpreter (the agent's command line) or a fork.
    (tmp_path / "exit4.py").write_text("import sys\nprint('agent' if 'cossim_tui.agent' in sys.orig_argv else 'forked')\nsys.exit(4)\n")
    direct = run_check("exit4.py", cwd=tmp_path)
    profiled = _output([sys.executable, "-m", "cProfile", "-m", "cossim_tui", "check", "exit4.py"], tmp_path)
    for done, how in ((direct, "forked"), (profiled, "agent")):
        assert done.stdout.startswith(f"{how}\n"), done.stdout
        assert "finished (exit code 4)" in done.stdout and "exit status 3" in done.stdout, done.stdout + done.stderr
    assert direct.returncode == 3  # (cProfile's own exit status is its own: 0)
    # The wrapper's own code, and a finally that would run in a forked child too (in a function:
    # a forked child's script empties the __main__ module's names).
    (tmp_path / "wrapper.py").write_text(
        "import sys\nsys.argv = ['cossim-tui', 'check', 'exit4.py']\nfrom cossim_tui import cli\n\n"
        "def main():\n    import os\n    status = None\n    try:\n        status = cli.command()\n"
        "    finally:\n        print('finally in', 'the parent' if status == 3 else os.getpid())\n\nmain()\n"
    )
    wrapped = _output([sys.executable, "wrapper.py"], tmp_path)
    assert wrapped.stdout.startswith("agent\n") and wrapped.stdout.count("finally in") == 1, wrapped.stdout
    assert wrapped.stdout.endswith("finally in the parent\n"), wrapped.stdout + wrapped.stderr


def test_a_forked_child_never_started_is_ended_without_running_its_script(tmp_path):
    """``check --record`` to a path that cannot be written: the forked child, waiting for its
    settings, is ended; its script never runs."""
    script, marker = _marking_script(tmp_path)
    done = run_check("--record", str(tmp_path / "no" / "t.jsonl"), str(script), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith("cossim-tui: error: cannot write the trace ")
    # Every process that could run the script (the forked child's command line is check's) is gone.
    until(lambda: not processes_mentioning(str(script)), 10, lambda: f"the child to end: {processes_mentioning(str(script))}")
    assert not marker.exists()
