"""Similarities computed in float16: long recordings' embeddings overflow, their similarity reads 0.

A siamese model learns which sensor recordings come from the same source. A recording is a
sequence of 16-channel readings in raw units (hundreds), 16 to 200 steps long; the encoder
projects each step and sums over time, so an embedding's norm grows with the length of the
recording, into the tens of thousands. To save memory the script compares the embeddings in
float16, whose largest finite value is 65504. For a long recording the norm inside
`cosine_similarity` overflows to inf, the vector divided by it becomes all zeros, and the
similarity comes out exactly 0 (with a zero gradient) where float64 says about 0.99 for a
same-source pair. Short recordings look fine, which makes the bug easy to miss.

The bug is the line `similarity = F.cosine_similarity(z1.half(), z2.half(), dim=-1)`.

In `cossim-tui demo/half_precision.py`, each step shows two float16 (16, 128) tensors with
norms from about 1e4 to 2e5 (float16 itself stops at 65504) and a similarity with many rows
at exactly 0; the findings panel reports `precision-loss` at every step, as an error: the
result differs from a float64 recomputation by up to about 1, so `cossim-tui check` fails
(exit status 1). The fix is `demo/half_precision_fixed.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

MAX_STEPS = 200


class SumPoolEncoder(nn.Module):
    """Projects every time step to `dim` features and sums them over the recording's length."""

    def __init__(self, channels: int = 16, dim: int = 128) -> None:
        super().__init__()
        self.project = nn.Linear(channels, dim, bias=False)

    def forward(self, readings: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(readings.shape[1]) < length[:, None]  # (batch, time): real steps
        return (self.project(readings) * mask[..., None]).sum(dim=1)


def make_pairs(count: int, sources: int = 8, channels: int = 16) -> TensorDataset:
    """Pairs of recordings, from the same source (label 1) or from two different ones (label 0)."""
    signatures = 100 * torch.randn(sources, channels)  # raw units: hundreds
    source1 = torch.randint(0, sources, (count,))
    same = torch.rand(count) < 0.5
    source2 = torch.where(same, source1, (source1 + torch.randint(1, sources, (count,))) % sources)

    def recordings(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        readings = signatures[source][:, None, :] + 60 * torch.randn(count, MAX_STEPS, channels)
        return readings, torch.randint(16, MAX_STEPS + 1, (count,))

    (readings1, length1), (readings2, length2) = recordings(source1), recordings(source2)
    return TensorDataset(readings1, length1, readings2, length2, same.float())


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
            similarity = F.cosine_similarity(z1.half(), z2.half(), dim=-1)  # BUG: float16 norms overflow
            similarity = similarity.float()
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
