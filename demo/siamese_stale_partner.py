"""The bug from the troubleshooting article: a siamese loop whose cosine similarity is stuck at 1.

On the first batch the partner *is* the anchor (`vector2_tensor = vector1_tensor`), and on
every later batch the partner is the previous batch's anchor, recycled with `.detach()`.
The embedder makes it worse, as in the article: it averages each feature map over the whole
image, and FakeData's images are noise with the same statistics everywhere, so every image
averages to nearly the same features and every embedding points the same way (a collapse).
Step through it with `cossim-tui demo/siamese_stale_partner.py`; the corrected loop is
`demo/siamese_fixed.py`.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData


class VGGEmbedder(nn.Module):
    """A small VGG-style embedder: two conv blocks, each feature map averaged over the image
    (global average pooling, as the usual pretrained backbones do), then a linear projection
    to 32 dims."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()

    torch.manual_seed(0)
    data = FakeData(size=args.images, image_size=(3, 32, 32), num_classes=4,
                    transform=transforms.ToTensor(), random_offset=0)
    train_loader = DataLoader(data, batch_size=1, shuffle=True)
    model = VGGEmbedder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    bce = nn.BCELoss()

    for epoch in range(args.epochs):
        for i, (image1, label1) in enumerate(train_loader):
            vector1_tensor = model(image1)
            if i == 0:  # first batch: the partner IS the same tensor
                image2, label2, vector2_tensor = image1, label1, vector1_tensor
            similarity = F.cosine_similarity(vector1_tensor, vector2_tensor, dim=-1)
            target = (label1 == label2).float()
            cost = bce(torch.sigmoid(similarity), target)  # sigmoid squashes [-1, 1] into [0.27, 0.73]
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            if i % 10 == 0:
                print(f"epoch {epoch} batch {i:3d}  loss {cost.item():.4f}  similarity {similarity.item():.4f}")
            image2, label2 = image1.clone(), label1
            vector2_tensor = vector1_tensor.detach()  # partner recycled from this batch: stale next time


if __name__ == "__main__":
    main()
