"""A small project of the user's own similarity functions, written into a folder for the
``--watch`` and ``probe`` tests (in this process: ``tests/agent/test_watch_probe.py``; through
the real command: ``tests/integration/test_watch_probe.py``).

``mypkg/losses.py`` holds a function, a method, a distance (``2 - 2·cos``) and a matrix;
``train.py`` calls two of them and a ``probe``; ``kinds.py`` the distance and the matrix.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

LOSSES = '''
import torch


def cos_sim(a, b):
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (a * b).sum(-1)


class Head:
    def score(self, query, key):
        return (query * key).sum(-1)


def byol_loss(p, z):
    """byol-pytorch's loss: 2 - 2·cos, a distance that is near 0 when the pair agrees."""
    p = p / p.norm(dim=-1, keepdim=True)
    z = z / z.norm(dim=-1, keepdim=True)
    return 2 - 2 * (p * z).sum(-1)


class CosineSimilarity:
    """pytorch-metric-learning's distance: a method whose pair comes after ``self``."""

    def compute_mat(self, query_emb, ref_emb):
        query_emb = query_emb / query_emb.norm(dim=-1, keepdim=True)
        ref_emb = ref_emb / ref_emb.norm(dim=-1, keepdim=True)
        return query_emb @ ref_emb.T
'''

KINDS = '''
import torch
from mypkg.losses import byol_loss, CosineSimilarity

torch.manual_seed(0)
for _ in range(4):
    p = torch.randn(8, 16)
    z = p + 1e-4 * torch.randn(8, 16)
    print("loss", round(byol_loss(p, z).mean().item(), 3))
    print("mat", CosineSimilarity().compute_mat(p, torch.ones(3, 16)).shape)
'''

TRAIN = '''
import torch
import cossim_tui
from mypkg.losses import cos_sim, Head

torch.manual_seed(0)
z = torch.randn(4, 8)
print("cos_sim", cos_sim(z, z.detach()).tolist())
print("score", Head().score(z, torch.ones(4, 8)).tolist())
cossim_tui.probe(z, z + 1, label="anchor/positive")
'''


def write_project(folder: Path) -> Path:
    """The project, written into ``folder``; returns ``folder``."""
    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "losses.py").write_text(textwrap.dedent(LOSSES))
    (folder / "train.py").write_text(textwrap.dedent(TRAIN))
    (folder / "kinds.py").write_text(textwrap.dedent(KINDS))
    return folder
