"""lightly's SimSiam: a tiny randomly initialised backbone, lightly's heads, two views of
generated images per batch, NegativeCosineSimilarity called from two lines. With ``--same-view``
the second view is a copy-paste slip: ``model(x0)`` again, so both sides of the second loss come
from one input (identical-inputs). Prints how many times it called the loss."""
import argparse

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--same-view", action="store_true")
parser.add_argument("--steps", type=int, default=6)
args = parser.parse_args()


class SimSiam(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU())
        self.projection_head = SimSiamProjectionHead(32, 32, 16)
        self.prediction_head = SimSiamPredictionHead(16, 8, 16)

    def forward(self, x):
        z = self.projection_head(self.backbone(x))
        p = self.prediction_head(z)
        return z.detach(), p


torch.manual_seed(0)
model = SimSiam()
criterion = NegativeCosineSimilarity()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
calls = 0
for step in range(args.steps):
    images = torch.rand(8, 3, 8, 8)
    x0 = images + 0.1 * torch.randn_like(images)
    x1 = images.flip(-1)
    z0, p0 = model(x0)
    z1, p1 = model(x0 if args.same_view else x1)
    first = criterion(z0, p1)
    second = criterion(p0, x1=z1)
    calls += 2
    loss = 0.5 * (first + second)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"loss calls: {calls}")
