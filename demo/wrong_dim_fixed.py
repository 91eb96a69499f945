"""The wrong-dimension fix: the similarity is taken over the feature dimension, `dim=-1`.

Same pairs, model and loss as `demo/wrong_dim.py`; the only change is `dim=-1` (the last
dimension, the 32 features) instead of `dim=0` (the batch dimension, size 1). Each step now
gives one similarity per pair, anywhere in [-1, 1], with a gradient, so the model learns:
same-class pairs move towards 1 and different-class pairs below 0.

In `cossim-tui demo/wrong_dim_fixed.py`, each step shows two (1, 32) tensors, a similarity
of shape (1,) that moves from step to step, and no findings.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wrong_dim import make_pairs


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
        similarity = F.cosine_similarity(vector1, vector2, dim=-1)  # FIX: over the 32 features
        score = similarity.mean()
        # Same class: pull to 1. Different class: push down to 0 or below.
        loss = torch.where(same.bool(), 1 - score, score.clamp(min=0)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % 6 == 0:
            kind = "same class" if same.item() else "different class"
            print(f"pair {i:2d}  loss {loss.item():.4f}  similarity {similarity.item():+.4f}  ({kind})")


if __name__ == "__main__":
    main()
