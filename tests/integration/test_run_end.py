"""How a run ends, as the caller sees it in ``ScriptExited`` and in the script's output."""

from __future__ import annotations

import signal

import pytest

from cossim_tui.session.events import Target
from integration.live import FIXTURES, run_plain


def test_normal_end(start_run):
    live = start_run(FIXTURES / "output_order.py")
    exited = live.wait_exit()
    assert (exited.status, exited.exit_code, exited.signal, exited.exception) == ("finished", 0, None, None)


def test_sys_exit_keeps_the_scripts_code(start_run):
    live = start_run(FIXTURES / "exit_with.py", "3")
    exited = live.wait_exit()
    assert (exited.status, exited.exit_code, exited.exception) == ("finished", 3, None)
    assert live.output == "exiting with 3\n"


def test_uncaught_exception(start_run, tmp_path):
    live = start_run(FIXTURES / "raise_boom.py", cwd=tmp_path)
    exited = live.wait_exit()

    assert exited.status == "error"
    assert exited.exception == "ValueError: boom"
    assert exited.exit_code == 1
    output = live.output
    assert output.startswith("about to fail\nTraceback (most recent call last):\n")
    assert 'raise_boom.py", line 10, in inner\n    raise ValueError("boom")\n' in output
    assert output.endswith("ValueError: boom\n")


def test_uncaught_exception_traceback_starts_at_the_script(start_run, tmp_path):
    script = FIXTURES / "raise_boom.py"
    live = start_run(script, cwd=tmp_path)
    live.wait_exit()

    output = live.output
    frames = [line for line in output.splitlines() if line.startswith("  File ")]
    assert frames[0] == f'  File "{script}", line 18, in <module>'
    assert all(str(script) in line for line in frames), frames
    assert "cossim_tui" not in output and "runpy" not in output
    # Exactly what python itself prints for it.
    assert output == run_plain([str(script)], cwd=tmp_path).stdout


def _broken_script(tmp_path):
    """Generated here: a broken .py file in the repository would trip up every tool that reads it."""
    script = tmp_path / "broken.py"
    script.write_text('print("never runs")\ndef broken(:\n    pass\n')
    return script


def test_syntax_error(start_run, tmp_path):
    live = start_run(_broken_script(tmp_path))
    exited = live.wait_exit()

    assert exited.status == "error"
    assert exited.exit_code == 1
    assert exited.exception is not None and exited.exception.startswith("SyntaxError")
    assert "never runs" not in live.output
    assert "def broken(:" in live.output
    assert live.output.endswith("SyntaxError: invalid syntax\n")


def test_syntax_error_reads_as_under_python(start_run, tmp_path):
    script = _broken_script(tmp_path)
    live = start_run(script)
    live.wait_exit()
    assert "cossim_tui" not in live.output
    assert live.output == run_plain([str(script)]).stdout


def test_killed_by_a_signal(start_run):
    live = start_run(FIXTURES / "kill_self.py")
    exited = live.wait_exit()
    assert (exited.status, exited.signal, exited.exit_code) == ("killed", signal.SIGKILL, None)
    assert "killing myself" in live.output


def test_missing_module(start_run, tmp_path):
    live = start_run(Target(module="no_such_module_for_cossim_tests", args=["--x"]), cwd=tmp_path)
    exited = live.wait_exit()
    assert exited.status == "not-found"
    assert exited.exception is not None and "no_such_module_for_cossim_tests" in exited.exception
    assert not live.steps


@pytest.mark.parametrize("name", ["raise_in_cosine.py", "raise_after_cosine.py"])
def test_a_script_that_raises_around_an_intercepted_call_prints_python_s_traceback(start_run, tmp_path, name):
    """Raised inside ``F.cosine_similarity`` (torch's error, through cossim-tui's wrapper) or in
    the script's own code after a call: the traceback is the one python prints, with no frame of
    cossim-tui's (``intercept.py``, ``intercepted``, ``run_and_report``)."""
    script = FIXTURES / name
    live = start_run(script, cwd=tmp_path)
    exited = live.wait_exit()

    assert exited.status == "error"
    output = live.output
    assert "cossim_tui" not in output and "run_and_report" not in output and "intercepted" not in output, output
    assert output == run_plain([str(script)], cwd=tmp_path).stdout


def test_a_module_that_raises_inside_an_intercepted_call_prints_python_s_traceback(start_run, tmp_path):
    """``-m MODULE``: none of cossim-tui's frames; runpy's above the module's, as python shows them."""
    (tmp_path / "raising_module.py").write_text((FIXTURES / "raise_in_cosine.py").read_text())
    live = start_run(Target(module="raising_module", args=[]), cwd=tmp_path)
    assert live.wait_exit().status == "error"
    assert "cossim_tui" not in live.output and "run_and_report" not in live.output, live.output
    assert live.output == run_plain(["-m", "raising_module"], cwd=tmp_path).stdout
