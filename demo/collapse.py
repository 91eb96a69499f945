"""Representation collapse: a self-supervised loop that learns to map every image to one vector.

Each batch of FakeData images is augmented twice (random crop, flip, brightness, noise) and
the two views go through the same encoder + projector. The loss asks the two views of each
image to agree, `-cos(z1, z2)`, and nothing else. The cheapest way to make every pair agree
is to ignore the input and output one constant direction, so that is what the network
learns.

The bug is the loss line `loss = -F.cosine_similarity(z1, z2, dim=-1).mean()`: positive
pairs only, no negatives, no stop-gradient, no predictor. The similarity climbs towards 1 and
the loss looks great, but the embeddings carry almost no information about the image.

In `cossim-tui demo/collapse.py`, step through the loss line and watch the similarity climb
towards 1 while the two embedding batches lose their spread. First `common-mode` (info)
appears: one shared direction is taking over the batch. Then, once the collapse score (the
spread of the L2-normalised vectors, about 1 when healthy) has stayed under 0.1 for 3 steps,
`collapse` (error) is reported for every remaining step. The fix is `demo/collapse_fixed.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData


def augment(images: torch.Tensor) -> torch.Tensor:
    """One random view of each image: a padded random crop, a horizontal flip, brightness, noise."""
    n, _, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    views = []
    for image in padded:
        top, left = torch.randint(0, 9, (2,)).tolist()
        view = image[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            view = view.flip(-1)
        views.append(view)
    views = torch.stack(views) * (0.8 + 0.4 * torch.rand(n, 1, 1, 1))
    return views + 0.05 * torch.randn_like(views)


class Encoder(nn.Module):
    """A small conv backbone and a projector to `dim`-dimensional embeddings."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Flatten(),
        )
        self.projector = nn.Sequential(
            nn.Linear(32 * 8 * 8, 128), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Linear(128, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    # 8x8 random images blown up to 32x32: smooth blobs that survive a crop and a flip.
    data = FakeData(size=args.images, image_size=(3, 8, 8), num_classes=10, random_offset=0,
                    transform=transforms.Compose([transforms.Resize(32), transforms.ToTensor()]))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = Encoder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

    for epoch in range(args.epochs):
        for i, (images, _) in enumerate(loader):
            z1 = model(augment(images))
            z2 = model(augment(images))
            loss = -F.cosine_similarity(z1, z2, dim=-1).mean()  # BUG: no stop-gradient, no predictor
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i % 3 == 0:
                print(f"epoch {epoch} batch {i}  loss {loss.item():+.4f}")


if __name__ == "__main__":
    main()
