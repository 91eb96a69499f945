"""The user's line first: a cosine call made inside an installed library is reported at the line
of the script that called into the library, with the library's function as ``via`` and the
tensors named as the script passed them (CONTRACT "Smaller additions"; issue 18 item 2).

The library here is a small package written into a ``site-packages`` folder of the test's own,
so that this runs without any of the ``[integrations]`` extra; tests/integrations/ does the same
with the real libraries.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from agent_harness import run_script

LIBRARY = '''
import torch
import torch.nn.functional as F


class PairLoss(torch.nn.Module):
    def forward(self, x0, x1):
        return -F.cosine_similarity(x0, x1, dim=1, eps=1e-8).mean()


def made_inside(batch):
    halves = batch.chunk(2)
    return F.cosine_similarity(halves[0], halves[1]).mean()
'''

SCRIPT = '''
import sys
sys.path.insert(0, sys.argv[1])
import torch
from pairlib import PairLoss, made_inside

criterion = PairLoss()
torch.manual_seed(0)
for step in range(2):
    z0, p1 = torch.randn(8, 16), torch.randn(8, 16)
    first = criterion(z0, p1)
    second = criterion(x1=z0, x0=p1)
    third = made_inside(torch.randn(8, 16))
'''


def test_a_call_inside_a_library_is_at_the_users_line_via_the_library(tmp_path: Path) -> None:
    packages = tmp_path / "env" / "site-packages"
    (packages / "pairlib").mkdir(parents=True)
    (packages / "pairlib" / "__init__.py").write_text(textwrap.dedent(LIBRARY))
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    lines = script.read_text().splitlines()

    def line_of(text: str) -> str:
        return f"train.py:{next(n for n, line in enumerate(lines, 1) if text in line)}"

    run = run_script(script, str(packages))
    assert run.report["status"] == "finished", run.report["exception"]
    assert run.report["steps"] == 6
    calls = run.report["calls"]
    # Three user lines, three sites: not one site at the library's line.
    assert [c["site"] for c in calls[:3]] == [line_of("first ="), line_of("second ="), line_of("third =")]
    assert [c["via"] for c in calls[:3]] == ["pairlib:PairLoss.forward", "pairlib:PairLoss.forward", "pairlib:made_inside"]
    # The library passed the script's tensors through: they carry the script's names, whether
    # given by position or by keyword. A tensor the library made itself keeps the library's name.
    assert [[a["expr"] for a in c["args"]] for c in calls[:3]] == [["z0", "p1"], ["p1", "z0"], ["halves[0]", "halves[1]"]]
    # The source shown is the script's.
    step = run.steps[0]
    assert step.site.via == "pairlib:PairLoss.forward"
    assert any("first = criterion(z0, p1)" in line for line in step.site.lines)


def test_a_call_in_the_users_own_code_has_no_via(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import torch\nimport torch.nn.functional as F\nF.cosine_similarity(torch.ones(2, 3), torch.rand(2, 3))\n")
    run = run_script(script)
    assert [(c["site"], c["via"]) for c in run.report["calls"]] == [("train.py:3", None)]
