"""The architecture's import rules hold: the TUI never loads torch, the agent side never loads
textual or rich, and the script itself decides when torch is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("module", ["cossim_tui.tui.app", "cossim_tui.tui.run", "cossim_tui.cli", "cossim_tui.report", "cossim_tui.session.replay", "cossim_tui.session.trace"])
def test_ui_side_never_imports_torch(module: str) -> None:
    loaded = _top_level(_modules_after_import(module))
    assert "torch" not in loaded
    assert "numpy" not in loaded


@pytest.mark.parametrize(
    "module",
    [
        "cossim_tui.protocol",
        "cossim_tui.agent.bootstrap",
        "cossim_tui.agent.controller",
        "cossim_tui.agent.capture",
        "cossim_tui.agent.evidence",
        "cossim_tui.diagnostics.judge",
        "cossim_tui.launcher",
        "cossim_tui.headless",
    ],
)
def test_agent_side_never_imports_textual_or_rich(module: str) -> None:
    loaded = _top_level(_modules_after_import(module))
    assert "textual" not in loaded
    assert "rich" not in loaded


@pytest.mark.parametrize("module", ["cossim_tui.protocol", "cossim_tui.diagnostics.judge", "cossim_tui.diagnostics.codes"])
def test_protocol_and_judges_are_pure(module: str) -> None:
    assert "torch" not in _top_level(_modules_after_import(module))


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
    ``lint-imports`` checks in CI): cli → the screens → report → launcher → session → agent →
    judges → protocol, torch nowhere above the agent, textual nowhere below the TUI."""
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
