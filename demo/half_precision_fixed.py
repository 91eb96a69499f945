"""The float16 fix: the embeddings are compared in float32.

Same recordings, encoder, loss and optimiser as `demo/half_precision.py`; the only change is
that `cosine_similarity` gets the float32 embeddings instead of `.half()` copies. float32
holds norms up to about 3e38, so long recordings no longer overflow: no pair reads exactly 0
and same-source pairs of every length reach about 0.99. (Where memory matters, normalise
first, `F.normalize(z.float(), dim=-1).half()`: unit vectors cannot overflow.)

In `cossim-tui demo/half_precision_fixed.py`, each step shows two float32 (16, 128) tensors
with the same large norms, a similarity that agrees with float64, and no findings.
"""

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from half_precision import SumPoolEncoder, make_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = DataLoader(make_pairs(args.pairs), batch_size=args.batch_size, shuffle=True)
    model = SumPoolEncoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    for epoch in range(args.epochs):
        for i, (readings1, length1, readings2, length2, same) in enumerate(loader):
            z1, z2 = model(readings1, length1), model(readings2, length2)
            similarity = F.cosine_similarity(z1, z2, dim=-1)  # FIX: float32, no overflow
            # Same source: pull to 1. Different sources: push down to 0 or below.
            loss = torch.where(same.bool(), 1 - similarity, similarity.clamp(min=0)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i % 3 == 0:
                positives = similarity[same.bool()]
                print(f"epoch {epoch} batch {i}  loss {loss.item():.4f}  same-source similarity "
                      f"mean {positives.mean().item():+.3f}  pairs at exactly 0: "
                      f"{int((similarity == 0).sum())}/{len(similarity)}")


if __name__ == "__main__":
    main()
