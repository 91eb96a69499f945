"""The README's opening: the two commands a new user copies first stay exactly as they are,
and someone without a GPU is told, before the first section, how to install a CPU-only torch
(several GB smaller than the build pip picks by default)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
OPENING_COMMANDS = [
    "pip install -e . && cossim-tui demo/siamese_stale_partner.py",
    "pip install -e '.[test]' && python -m pytest",
]


def _opening() -> str:
    return README.read_text(encoding="utf-8").split("\n## ", 1)[0]


def test_the_opening_commands_are_the_first_two_code_blocks():
    blocks = _opening().split("```bash\n")[1:3]
    assert [block.split("\n```", 1)[0] for block in blocks] == OPENING_COMMANDS


def test_the_opening_tells_people_without_a_gpu_how_to_get_the_cpu_only_torch():
    opening = _opening()
    hint = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert hint in opening
    assert opening.index(OPENING_COMMANDS[0]) < opening.index(hint)
    assert "GPU" in opening and "CPU-only" in opening
