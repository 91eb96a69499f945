"""The script sees exactly what it would under ``python SCRIPT`` / ``python -m MODULE``.

Each case runs ``fixtures/dump_main.py`` (or a module made from it) once under plain python
and once under the agent, from the same working directory and with the same arguments, and
compares what the script saw. The agent is started both ways it can be: by ``launcher.Run``
(a new interpreter, ``python -m cossim_tui.agent``), and by the command itself (``python -m
cossim_tui check``: a fork of the command's process, started before its settings are known).
The arguments look like options on purpose: they belong to the script, not to the agent.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from cossim_tui.session.events import Target
from integration.live import FIXTURES, run_plain

LAUNCHES = ["spawned", "forked by check", "forked by the cossim-tui command"]

DUMP = FIXTURES / "dump_main.py"
OPTION_LIKE = ["--epochs", "1", "-m", "x", "--help"]
COMPARED = ["argv", "name", "cwd", "sys_path", "file", "spec", "loader", "main_is_this_module", "names_at_start"]


def _read(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    return data


def _under_python(command: list[str], out: Path, cwd: Path, env: dict | None = None) -> dict:
    done = run_plain(command, cwd=cwd, env=env)
    assert done.returncode == 0, done.stdout
    return _read(out)


def _under_agent(start_run, target: Target, out: Path, cwd: Path, env: dict | None = None, launch: str = "spawned") -> dict:
    if launch == "spawned":
        live = start_run(target, cwd=cwd, env=env)
        exited = live.wait_exit()
        assert (exited.status, exited.exit_code) == ("finished", 0), live.output
        return _read(out)
    command = ["-m", "cossim_tui"] if launch == "forked by check" else [_installed_command()]
    done = run_plain([*command, "check", "--fail-on", "never", *target.command_line], cwd=cwd, env=env)
    assert done.returncode == 0 and "finished (exit code 0)" in done.stdout, done.stdout
    seen = _read(out)
    assert "cossim_tui.agent" not in seen["orig_argv"]  # a fork of the command: not a new interpreter
    return seen


def _installed_command() -> str:
    """The console script pip installed for this interpreter (where pip puts scripts: not
    necessarily on PATH, and a shim there may stand in front of it)."""
    places = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")]
    found = [Path(place) / "cossim-tui" for place in places if (Path(place) / "cossim-tui").is_file()]
    assert found, f"cossim-tui is not installed in {places} (pip install -e .)"
    return str(found[0])


def _assert_same(plain: dict, agent: dict) -> None:
    for key in COMPARED:
        assert agent[key] == plain[key], f"{key}: agent {agent[key]!r} != python {plain[key]!r}"
    # The script's stdin is /dev/null here (check passes its own on; these runs give it /dev/null),
    # never the terminal, and the agent leaves no trace in its environment.
    assert agent["stdin_isatty"] is False
    assert agent["env"] == [] and agent["child_env"] == []


@pytest.mark.parametrize(
    "how",
    [
        "relative",
        "absolute",
        pytest.param("dotdot"),
    ],
)
@pytest.mark.parametrize("launch", LAUNCHES)
def test_script_sees_what_python_gives_it(start_run, tmp_path, how, launch):
    out = tmp_path / "seen.json"
    if how == "relative":  # from the fixtures' parent: a relative path, another directory
        workdir, script = FIXTURES.parent, os.path.join("fixtures", DUMP.name)
    else:
        workdir = tmp_path / "elsewhere"
        workdir.mkdir()
        script = os.path.relpath(DUMP, workdir) if how == "dotdot" else str(DUMP)
    args = [str(out), *OPTION_LIKE]

    plain = _under_python([script, *args], out, workdir)
    agent = _under_agent(start_run, Target(script=script, args=args), out, workdir, launch=launch)

    _assert_same(plain, agent)
    assert agent["argv"] == [script, *args]
    assert agent["name"] == "__main__"
    assert agent["cwd"] == str(workdir)
    assert agent["sys_path"][0] == str(FIXTURES)
    assert agent["spec"] is None
    assert agent["loader"] == "SourceFileLoader"


@pytest.mark.parametrize("launch", LAUNCHES)
def test_symlinked_script(start_run, tmp_path, launch):
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "train.py").symlink_to(DUMP)
    workdir = tmp_path
    out = tmp_path / "seen.json"
    script = os.path.join("linked", "train.py")
    args = [str(out), *OPTION_LIKE]

    plain = _under_python([script, *args], out, workdir)
    agent = _under_agent(start_run, Target(script=script, args=args), out, workdir, launch=launch)

    _assert_same(plain, agent)
    # python puts the real directory on sys.path but keeps the link's name in __file__.
    assert agent["sys_path"][0] == str(FIXTURES)
    assert agent["file"] == str(linked / "train.py")


@pytest.fixture
def package(tmp_path) -> Path:
    """``pkg`` with ``pkg.dump`` (the dump fixture) and ``pkg.__main__`` (the same)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package for the -m tests."""\n')
    shutil.copy(DUMP, pkg / "dump.py")
    shutil.copy(DUMP, pkg / "__main__.py")
    shutil.copy(DUMP, tmp_path / "dumptop.py")
    return tmp_path


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize("module", ["pkg.dump", "pkg", "dumptop"])
def test_module_form_matches_python_m(start_run, package, module, launch):
    out = package / "seen.json"
    args = [str(out), *OPTION_LIKE]

    plain = _under_python(["-m", module, *args], out, package)
    agent = _under_agent(start_run, Target(module=module, args=args), out, package, launch=launch)

    _assert_same(plain, agent)
    assert agent["name"] == "__main__"
    assert agent["sys_path"][0] == str(package)
    assert agent["spec"]["name"] == (module + ".__main__" if module == "pkg" else module)
    assert agent["argv"][1:] == args


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize("form", ["script", "module"])
def test_safe_path_is_respected(start_run, package, form, launch):
    """``PYTHONSAFEPATH=1``: neither the script's directory nor the cwd goes on sys.path."""
    out = package / "seen.json"
    env = dict(os.environ, PYTHONSAFEPATH="1")
    args = [str(out), *OPTION_LIKE]
    if form == "script":
        command, target = [str(DUMP), *args], Target(script=str(DUMP), args=args)
    else:
        command, target = ["-m", "dumptop", *args], Target(module="dumptop", args=args)
    workdir = package
    if form == "module":
        # python -P cannot find a module in the cwd; put it on PYTHONPATH as a user would.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")]))
        workdir = package / "pkg"

    plain = _under_python(command, out, workdir, env)
    agent = _under_agent(start_run, target, out, workdir, env, launch=launch)

    assert str(FIXTURES) not in plain["sys_path"]
    _assert_same(plain, agent)


def test_a_forked_child_loads_no_module_a_spawned_one_does_not(start_run, tmp_path):
    """The command's own imports (its argument parser, say) stay out of the script's way: a
    script's own ``argparse.py`` is found first, as under python."""
    out = tmp_path / "seen.json"
    args = [str(out)]
    spawned = _under_agent(start_run, Target(script=str(DUMP), args=args), out, tmp_path)
    forked = _under_agent(start_run, Target(script=str(DUMP), args=args), out, tmp_path, launch="forked by the cossim-tui command")
    extra = set(forked["modules_at_start"]) - set(spawned["modules_at_start"])
    assert {name for name in extra if name.split(".")[0] != "cossim_tui"} == set()


def test_a_script_s_own_module_is_not_hidden_by_the_command_s(tmp_path):
    (tmp_path / "argparse.py").write_text("MINE = True\n")
    (tmp_path / "train.py").write_text("import argparse\nprint('mine:', getattr(argparse, 'MINE', False))\n")
    plain = run_plain(["train.py"], cwd=tmp_path)
    under = run_plain([_installed_command(), "check", "train.py"], cwd=tmp_path)
    assert plain.stdout == "mine: True\n"
    assert under.stdout.startswith("mine: True\n"), under.stdout
