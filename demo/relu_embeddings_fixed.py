"""The ReLU-embedding fix: the embedding is taken before the ReLU, and centred by a BatchNorm.

Same data, pairs, loss and optimiser as `demo/relu_embeddings.py`; `EmbeddingHead` changed:
its final `nn.ReLU()` is gone, so each coordinate can be negative and the similarity spans
[-1, 1], and a `BatchNorm1d` centres each coordinate across the batch. Dropping the ReLU
alone is not quite enough at the start: a freshly initialised `Linear` after a ReLU still
adds a shared offset to every embedding (cossim-tui would report `common-mode` at step 0);
the BatchNorm removes it. Unrelated items now start around -0.2 instead of about +0.5, and
different-class pairs settle below 0 (the printed minimum is around -0.6) instead of being
pinned at exactly 0.

In `cossim-tui demo/relu_embeddings_fixed.py` the embeddings' value stats straddle 0, the
similarity's min goes negative, and the findings panel stays empty.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from relu_embeddings import make_items


class EmbeddingHead(nn.Module):
    def __init__(self, features: int = 20, dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(),
            nn.Linear(64, dim), nn.BatchNorm1d(dim),  # FIX: no ReLU; centred, and free to be negative
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
