"""The corrected siamese loop: every step compares two different images, each embedded now.

The dataset pairs each image with another one, and both go through the model in the same
step, so the similarity moves with the data and the labels. The embedder keeps where each
feature is in the image instead of averaging it away, so different images give different
directions. Compare with `demo/siamese_stale_partner.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets import FakeData

from siamese_stale_partner import VGGEmbedder


class LayoutEmbedder(VGGEmbedder):
    """The same conv blocks, with the feature maps flattened rather than averaged over the
    image: the projection sees where each feature is, not only how strong it is on average."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__(dim)
        self.head = nn.Linear(32 * 8 * 8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class NeighbourPairs(Dataset):
    """Image i paired with image i + 1 (the last with the first): never an image with itself."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple:
        image1, label1 = self.images[i]
        image2, label2 = self.images[(i + 1) % len(self.images)]
        return image1, label1, image2, label2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = FakeData(size=args.images, image_size=(3, 32, 32), num_classes=4,
                    transform=transforms.ToTensor(), random_offset=0)
    loader = DataLoader(NeighbourPairs(data), batch_size=1, shuffle=True)
    model = LayoutEmbedder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003)

    for epoch in range(args.epochs):
        for i, (image1, label1, image2, label2) in enumerate(loader):
            vector1_tensor = model(image1)
            vector2_tensor = model(image2)  # the partner, computed from its own image, this step
            similarity = F.cosine_similarity(vector1_tensor, vector2_tensor, dim=-1)
            same = label1 == label2
            # A contrastive loss on the similarity itself: pull same-label pairs to 1, push the
            # others below a margin. No sigmoid squashing [-1, 1] into [0.27, 0.73].
            cost = torch.where(same, 1 - similarity, (similarity - 0.2).clamp(min=0)).mean()
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            if i % 10 == 0:
                print(f"epoch {epoch} batch {i:3d}  loss {cost.item():.4f}  similarity {similarity.item():.4f}")


if __name__ == "__main__":
    main()
