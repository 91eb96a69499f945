"""The architecture's import rules hold: the TUI never loads torch, the agent side never loads
textual or rich, and the script itself decides when torch is imported."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import pytest

# The modules of each rule share one child (see ``_loaded_by``): all on one worker (pyproject).
ONE_CHILD = pytest.mark.xdist_group("import-hygiene")

UI_SIDE = ("cossim_tui.tui.app", "cossim_tui.tui.run", "cossim_tui.cli", "cossim_tui.report", "cossim_tui.session.replay", "cossim_tui.session.trace")
AGENT_SIDE = (
    "cossim_tui.protocol",
    "cossim_tui.agent.bootstrap",
    "cossim_tui.agent.controller",
    "cossim_tui.agent.capture",
    "cossim_tui.agent.evidence",
    "cossim_tui.diagnostics.judge",
    "cossim_tui.launcher",
    "cossim_tui.headless",
)
PURE = ("cossim_tui.protocol", "cossim_tui.diagnostics.judge", "cossim_tui.diagnostics.codes")


@functools.cache
def _modules_after_import(*modules: str) -> frozenset[str]:
    """``sys.modules`` of a fresh interpreter once it has imported ``modules`` (once a worker)."""
    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return frozenset(json.loads(out.stdout))


def _top_level(modules: frozenset[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def _loaded_by(module: str, side: tuple[str, ...], forbidden: set[str]) -> set[str]:
    """The top-level packages that importing ``module`` alone loads, as far as ``forbidden`` goes.

    One child imports the whole of ``side`` (each module of which a child of its own imported
    before, the agent's two of them loading torch): what importing one of them loads, importing
    all of them loads too, so where that child loaded none of ``forbidden`` no module of ``side``
    does. Where it loaded one, ``module`` is imported alone in a child of its own, as ever, so
    that each test still says which module loads what."""
    together = _top_level(_modules_after_import(*side))
    return together if not together & forbidden else _top_level(_modules_after_import(module))


@ONE_CHILD
@pytest.mark.parametrize("module", UI_SIDE)
def test_ui_side_never_imports_torch(module: str) -> None:
    loaded = _loaded_by(module, UI_SIDE, {"torch", "numpy"})
    assert "torch" not in loaded
    assert "numpy" not in loaded


@ONE_CHILD
@pytest.mark.parametrize("module", AGENT_SIDE)
def test_agent_side_never_imports_textual_or_rich(module: str) -> None:
    loaded = _loaded_by(module, AGENT_SIDE, {"textual", "rich"})
    assert "textual" not in loaded
    assert "rich" not in loaded


@ONE_CHILD
@pytest.mark.parametrize("module", PURE)
def test_protocol_and_judges_are_pure(module: str) -> None:
    assert "torch" not in _loaded_by(module, PURE, {"torch"})


def test_script_imports_torch_itself(tmp_path) -> None:
    """A script that sets OMP_NUM_THREADS before `import torch` must still be the first to load it."""
    from cossim_tui.launcher import Run
    from cossim_tui.session.events import OutputReceived, Target
    from cossim_tui.protocol import AgentConfig

    script = tmp_path / "first_line.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            print("torch loaded before the script:", "torch" in sys.modules)
            """
        )
    )
    run = Run(Target(script=str(script)), AgentConfig(mode="run"))
    try:
        output = "".join(e.text for e in run.events() if isinstance(e, OutputReceived))
    finally:
        run.terminate()
    assert "torch loaded before the script: False" in output


def test_the_import_contracts_hold() -> None:
    """The layers and forbidden imports of pyproject.toml's import-linter contracts (what
    ``lint-imports`` checks in CI): cli → the screens → report → job → its torchrun → launcher →
    session → agent → judges → protocol, torch nowhere above the agent (but in a job's torchrun
    process), textual nowhere below the TUI."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_a_jobs_command_never_imports_torch() -> None:
    """torchrun's own process reads its options (``python -m cossim_tui.torchrun``): the command
    that starts a job, and waits for the script torchrun found, never loads torch (~1.5 s)."""
    from pathlib import Path

    code = textwrap.dedent(
        """
        import json, sys
        from cossim_tui import cli
        from cossim_tui.job import JobRun

        mode, options, target = cli.parse(["check", "torchrun", "--standalone", "--nproc-per-node", "2", "tests/fixtures/ddp_pairs.py", "--steps", "2"])
        run = JobRun(options.torchrun)
        try:
            found = [run.target.script, run.target.module, run.target.args, run.target_name]
        finally:
            run.terminate()
        bad = cli.main(["torchrun", "--bogus", "tests/fixtures/ddp_pairs.py"])
        print(json.dumps({"target": found, "bad": bad, "torchrun_ended": run.process.poll() is not None, "torch": "torch" in sys.modules}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["target"] == ["tests/fixtures/ddp_pairs.py", None, ["--steps", "2"], "torchrun tests/fixtures/ddp_pairs.py"]
    assert seen["bad"] == 2 and "cossim-tui torchrun: error: unrecognized arguments: --bogus" in out.stderr
    assert seen["torchrun_ended"] and seen["torch"] is False
