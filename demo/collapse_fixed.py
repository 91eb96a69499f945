"""The collapse fixed: negatives in the loss (InfoNCE, as in SimCLR) and a BatchNorm on the output.

Same data, augmentations, encoder and optimiser as `demo/collapse.py`; two things changed:

- the loss compares every view in `z1` with every view in `z2`: the batch's similarity matrix
  (`F.cosine_similarity(z1[:, None], z2[None, :], dim=-1)`) divided by a temperature is a
  classification problem whose right answer is the diagonal (the other view of the *same*
  image). Pulling positives together now also pushes the other images away, so a constant
  output no longer scores well;
- the embedding passes through `BatchNorm1d(dim, affine=False)`, as SimSiam's projector does:
  each channel is centred across the batch, so no shared offset can take over the vectors.

In `cossim-tui demo/collapse_fixed.py` the loss line shows a 16 x 16 similarity matrix: the
positives (the diagonal) climb while the embeddings keep their spread (the collapse score
that cossim-tui computes at every step stays near 1). The one finding is `broadcast` (info),
which is intended: `z1[:, None]` (16, 1, 32) and `z2[None, :]` (1, 16, 32) are broadcast to
(16, 16, 32) to build the matrix.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData

from collapse import Encoder, augment

TEMPERATURE = 0.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = FakeData(size=args.images, image_size=(3, 8, 8), num_classes=10, random_offset=0,
                    transform=transforms.Compose([transforms.Resize(32), transforms.ToTensor()]))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = nn.Sequential(Encoder(dim=32), nn.BatchNorm1d(32, affine=False))  # FIX: centred channels
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

    for epoch in range(args.epochs):
        for i, (images, _) in enumerate(loader):
            z1 = model(augment(images))
            z2 = model(augment(images))
            # FIX: InfoNCE; row k of the matrix must pick column k (its own other view) among all.
            similarity = F.cosine_similarity(z1[:, None], z2[None, :], dim=-1)
            loss = F.cross_entropy(similarity / TEMPERATURE, torch.arange(len(images)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i % 3 == 0:
                positives = similarity.diagonal().mean().item()
                others = (similarity.sum() - similarity.diagonal().sum()).item() / (len(images) ** 2 - len(images))
                print(f"epoch {epoch} batch {i}  loss {loss.item():.4f}  "
                      f"same image {positives:+.3f}  other images {others:+.3f}")


if __name__ == "__main__":
    main()
