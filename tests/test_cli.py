"""The command line as ``cli.parse`` reads it, in-process: where our options end and the
target's arguments begin (CONTRACT: everything after SCRIPT or ``-m MODULE`` is the target's),
and that bad options still end with one line and status 2. Nothing is started here."""

from __future__ import annotations

import pytest

from cossim_tui import cli


@pytest.fixture
def script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    return "train.py"


@pytest.mark.parametrize("mode", ["check", "run"])
def test_everything_after_dash_m_module_belongs_to_the_module(mode):
    prefix = ["check"] if mode == "check" else []
    parsed_mode, options, target = cli.parse([*prefix, "--ignore", "same-object", "-m", "mymod", "--epochs", "2", "--ignore", "x", "-m", "y", "--help"])
    assert parsed_mode == mode
    assert (target.module, target.script, target.args) == ("mymod", None, ["--epochs", "2", "--ignore", "x", "-m", "y", "--help"])
    assert options.ignore == ["same-object"]


def test_dash_m_attached_to_its_module_as_python_takes_it():
    _, _, target = cli.parse(["check", "-mmymod", "--json", "r.json"])
    assert (target.module, target.args) == ("mymod", ["--json", "r.json"])


def test_check_options_before_dash_m_are_read():
    _, options, target = cli.parse(["check", "--max-steps", "3", "--json=r.json", "--fail-on", "warning", "-m", "mymod", "-v"])
    assert (options.max_steps, options.json, options.fail_on) == (3, "r.json", "warning")
    assert (target.module, target.args) == ("mymod", ["-v"])


def test_an_abbreviated_option_still_takes_its_value():
    """argparse accepts ``--max`` for ``--max-steps``: its value is not taken for the script."""
    _, options, target = cli.parse(["check", "--max", "3", "-m", "mymod"])
    assert (options.max_steps, target.module) == (3, "mymod")


def test_everything_after_the_script_belongs_to_it(script):
    _, options, target = cli.parse(["check", "--ignore", "same-object", script, "--ignore", "x", "-m", "y"])
    assert (target.script, target.module, target.args) == (script, None, ["--ignore", "x", "-m", "y"])
    assert options.ignore == ["same-object"]


def test_double_dash_ends_the_options(script):
    _, _, target = cli.parse(["--", script, "--", "-x"])
    assert (target.script, target.args) == (script, ["--", "-x"])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["check", "--epochs", "2", "-m", "mymod"], "unrecognized arguments: --epochs"),
        (["--epochs", "2", "train.py"], "unrecognized arguments: --epochs"),
        (["check", "-m"], "argument -m: expected one argument"),
        (["check", "--json", "-m", "mymod"], "argument --json: expected one argument"),
        (["check", "--fail-on", "sometimes", "-m", "mymod"], "argument --fail-on: invalid choice"),
        (["check", "--ignore", "no-such-code", "-m", "mymod"], "unknown finding code no-such-code"),
        (["check"], "the following arguments are required: SCRIPT (or -m MODULE)"),
        (["check", "--max-steps", "-1", "-m", "mymod"], "argument --max-steps: expected a number of calls"),
        (["check", "--watch", "m:f=cosine", "-m", "mymod"], "KIND is one of similarity, distance, loss"),
        (["check", "--watch", "m:f=", "-m", "mymod"], "KIND is one of similarity, distance, loss"),
    ],
)
def test_bad_options_exit_2_with_a_usage_and_a_reason(capsys, script, argv, says):
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == cli.EXIT_CANNOT_START
    err = capsys.readouterr().err
    assert err.startswith("usage: cossim-tui") and says in err, err


@pytest.mark.parametrize("kind", ["", "=similarity", "=distance", "=loss"])
def test_watch_says_what_the_function_returns(kind):
    """``--watch MODULE:FUNCTION=similarity``: the result is the cosine; plain, or another kind:
    only the arguments are judged. The agent knows the same kinds."""
    from cossim_tui.agent import intercept

    _, options, _ = cli.parse(["check", "--watch", f"mypkg.losses:Loss.compute{kind}", "-m", "mymod"])
    assert options.watch == [f"mypkg.losses:Loss.compute{kind}"]
    assert intercept.parse_watch(options.watch[0]) == ("mypkg.losses", "Loss.compute", kind[1:] or None)
    assert cli.WATCH_KINDS == intercept.WATCH_KINDS


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["--version"]])
def test_help_and_version_exit_0(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == 0
    assert "cossim-tui" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", [["torchrun"], ["-m", "torch.distributed.run"]])
def test_everything_after_torchrun_is_left_to_torchrun(spelling):
    """torchrun's own parser reads its options, in the job's torchrun process (``job.JobRun``):
    here they are only kept, untouched, and there is no target until torchrun has found it."""
    torchrun = ["--standalone", "--nproc-per-node", "2", "-m", "pkg.train", "--json", "x", "--ignore", "y"]
    mode, options, target = cli.parse(["check", "--json", "r.json", *spelling, *torchrun])
    assert (mode, target, options.torchrun, options.json) == ("check", None, torchrun, "r.json")
    assert (options.script, options.module, options.args) == (None, None, [])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--listen", "127.0.0.1:0", "train.py"], "--listen and --connect are for torchrun jobs"),
        (["check", "--connect", "127.0.0.1:1", "-m", "mymod"], "--listen and --connect are for torchrun jobs"),
        (["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:1", "torchrun", "train.py"], "one side listens"),
        (["--connect", "127.0.0.1:1", "torchrun", "--nnodes", "2", "train.py"], "--connect needs the job's secret in COSSIM_TUI_TOKEN"),
    ],
)
def test_listen_and_connect_are_checked_before_torchrun_starts(capsys, monkeypatch, script, argv, says):
    monkeypatch.delenv("COSSIM_TUI_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == cli.EXIT_CANNOT_START
    err = capsys.readouterr().err
    assert err.startswith("usage: cossim-tui") and says in err, err
