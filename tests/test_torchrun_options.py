"""How a job's torchrun reads the user's torchrun arguments (``python -m cossim_tui.torchrun``),
in-process: torchrun's own parser finds the script, the workers run the agent on it, and a
command line that starts no job says why, as the command will print it. Nothing is started."""

from __future__ import annotations

import pytest

from cossim_tui import torchrun
from cossim_tui.torchrun import __main__ as entry


@pytest.fixture
def script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "folder").mkdir()
    return "train.py"


def test_the_workers_run_the_agent_on_the_script(script):
    verdict, args = entry.read(["--standalone", "--nproc-per-node=2", script, "--lr", "0.1", "-m", "x"])
    assert verdict == torchrun.Parsed(script=script, args=["--lr", "0.1", "-m", "x"])
    assert args == ["--module", "--standalone", "--nproc-per-node=2", "cossim_tui.agent", script, "--lr", "0.1", "-m", "x"]


@pytest.mark.parametrize("flag", ["-m", "--module"])
def test_torchruns_own_module_flag_goes_to_the_agent(flag):
    """A module is not looked for here: python finds it, in the worker, as under torchrun."""
    verdict, args = entry.read(["--nnodes", "1", flag, "pkg.train", "--epochs", "1"])
    assert verdict == torchrun.Parsed(module="pkg.train", args=["--epochs", "1"])
    assert args == ["--module", "--nnodes", "1", "cossim_tui.agent", "-m", "pkg.train", "--epochs", "1"]


def test_options_that_end_with_a_double_dash_still_run_the_agent(script):
    """``torchrun --standalone -- train.py``: after "--" every word is the script's, so torchrun's
    --module, which makes the agent the module its workers run, must come before it."""
    from torch.distributed.run import get_args_parser

    verdict, args = entry.read(["--standalone", "--", script, "--lr", "1"])
    assert verdict == torchrun.Parsed(script=script, args=["--lr", "1"])
    workers = get_args_parser().parse_args(args)
    assert (workers.module, workers.training_script, workers.training_script_args) == (True, "cossim_tui.agent", [script, "--lr", "1"])


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--bogus", "train.py"], "cossim-tui torchrun: error: unrecognized arguments: --bogus"),
        (["--standalone"], "cossim-tui torchrun: error: the following arguments are required: training_script"),
        (["--nproc-per-node"], "cossim-tui torchrun: error: argument --nproc-per-node"),
    ],
)
def test_a_bad_option_is_torchruns_message_and_status_2(script, given, says):
    verdict, args = entry.read(given)
    assert isinstance(verdict, torchrun.Ended) and args == []
    assert (verdict.status, verdict.out) == (2, "")
    assert verdict.err.startswith("usage: cossim-tui torchrun ") and says in verdict.err, verdict.err
    assert "Traceback" not in verdict.err


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (["--standalone", "missing.py", "--lr", "1"], "cossim-tui: error: script not found: missing.py\n"),
        (["--standalone", "folder"], "cossim-tui: error: not a file: folder\n"),
        (["--no-python", "train.py"], "cossim-tui: error: torchrun --no-python does not run the script with python, so cossim-tui cannot enter its ranks; leave it out\n"),
        (["--no_python", "train.py"], "cossim-tui: error: torchrun --no-python does not run the script with python, so cossim-tui cannot enter its ranks; leave it out\n"),
        (["--run-path", "train.py"], "cossim-tui: error: torchrun --run-path does not run the script with python, so cossim-tui cannot enter its ranks; leave it out\n"),
    ],
)
def test_what_cannot_start_says_so_in_one_line_with_status_2(script, given, says):
    verdict, args = entry.read(given)
    assert verdict == torchrun.Ended(2, err=says) and args == []


def test_help_is_torchruns_with_status_0():
    verdict, _ = entry.read(["--help"])
    assert isinstance(verdict, torchrun.Ended) and verdict.status == 0 and verdict.err == ""
    assert verdict.out.startswith("usage: cossim-tui torchrun ") and "--nproc-per-node" in verdict.out


def test_a_verdict_reaches_the_command_as_it_was_sent():
    for verdict in (torchrun.Parsed(script="t.py", args=["-x"]), torchrun.Parsed(module="m"), torchrun.Ended(2, "o", "e")):
        assert torchrun.decode(torchrun.encode(verdict)) == verdict
