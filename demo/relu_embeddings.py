"""An embedding head that ends in ReLU: every similarity is ≥ 0, around a high baseline.

A siamese model learns which of 64 generated items share a class (4 classes, 20 features
each). Its head is an MLP whose last layer is followed by a ReLU, as a classifier's hidden
block would be, so the embeddings have no negative coordinates: two of them can never point
apart. Unrelated items start out at a cosine of about 0.5 just because they share the
positive orthant, and the loss, which asks different-class pairs to go to 0 or below, can at
best pin them at exactly 0 (the printed minimum sticks at +0.000).

The bug is the last line of `EmbeddingHead`: the `nn.ReLU()` after the final `nn.Linear`.

In `cossim-tui demo/relu_embeddings.py`, every step shows both embedding batches with min 0
in their value stats and no similarity below 0; the findings panel reports
`nonnegative-features` (warning) at every step, and `common-mode` (info) at the first
step or two, where the untrained head's shared positive offset dominates the batch (the
mean cosine between rows drops by about 0.6 once the batch mean is removed). The fix is
`demo/relu_embeddings_fixed.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class EmbeddingHead(nn.Module):
    def __init__(self, features: int = 20, dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(),
            nn.Linear(64, dim),
            nn.ReLU(),  # BUG: the embedding ends in ReLU, so all its coordinates are ≥ 0
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_items(count: int, classes: int = 4, features: int = 20) -> TensorDataset:
    """Items scattered around one random prototype per class."""
    prototypes = torch.randn(classes, features)
    labels = torch.arange(count) % classes
    items = prototypes[labels] + 0.7 * torch.randn(count, features)
    return TensorDataset(items, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = make_items(args.items)
    anchors = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    partners = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = EmbeddingHead()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    for epoch in range(args.epochs):
        for i, ((x1, y1), (x2, y2)) in enumerate(zip(anchors, partners)):
            emb1, emb2 = model(x1), model(x2)
            similarity = F.cosine_similarity(emb1, emb2, dim=-1)
            same = y1 == y2
            # Same class: pull to 1. Different class: push down to 0 or below.
            loss = torch.where(same, 1 - similarity, similarity.clamp(min=0)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i == 0:
                different = similarity[~same]
                print(f"epoch {epoch}  loss {loss.item():.4f}  different-class similarity: "
                      f"mean {different.mean().item():+.3f}  min {different.min().item():+.3f}")


if __name__ == "__main__":
    main()
