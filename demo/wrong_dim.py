"""The similarity taken over the wrong dimension: every value is exactly +1 or -1.

A siamese model embeds one item at a time, so each embedding has shape (1, 32): the batch
dimension first, the 32 features last. The similarity is taken with `dim=0`, over the
batch dimension, which has size 1. Each of the 32 "vectors" compared is then a single
number, and the cosine of two single numbers is just the product of their signs: +1 or -1.
Its gradient is exactly zero, so the weights never change and the model never learns.

The bug is the line `similarity = F.cosine_similarity(vector1, vector2, dim=0)`.

In `cossim-tui demo/wrong_dim.py`, each step shows two (1, 32) tensors and a similarity of
shape (32,) whose min is -1 and max is +1; the findings panel reports `degenerate-dim`
(error) at every step: the reduced dim 0 has size 1. The fix is `demo/wrong_dim_fixed.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def make_pairs(count: int, classes: int = 4, features: int = 20) -> TensorDataset:
    """`count` pairs of distinct items (every item used once); `same` says if they share a class."""
    prototypes = torch.randn(classes, features)
    labels = torch.randint(0, classes, (2, count))
    items = prototypes[labels] + 0.7 * torch.randn(2, count, features)
    return TensorDataset(items[0], items[1], (labels[0] == labels[1]).float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=24)
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = DataLoader(make_pairs(args.pairs), batch_size=1, shuffle=True)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    for i, (item1, item2, same) in enumerate(loader):
        vector1, vector2 = model(item1), model(item2)  # each (1, 32)
        similarity = F.cosine_similarity(vector1, vector2, dim=0)  # BUG: dim 0 is the batch dim, size 1
        score = similarity.mean()
        # Same class: pull to 1. Different class: push down to 0 or below.
        loss = torch.where(same.bool(), 1 - score, score.clamp(min=0)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % 6 == 0:
            values = " ".join(f"{v:+.0f}" for v in similarity[:8].tolist())
            print(f"pair {i:2d}  loss {loss.item():.4f}  similarity shape {tuple(similarity.shape)}: {values} ...")


if __name__ == "__main__":
    main()
