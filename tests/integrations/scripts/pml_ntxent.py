"""pytorch-metric-learning's NTXentLoss (SimCLR's loss) on a tiny encoder: two views of each
sample (the sample, and its features reversed), embeddings of both views in one batch, the
labels pairing them. The loss computes the similarity matrix of the normalised rows itself.
With ``--duplicate`` sample 5 of every batch is a copy of sample 3, so two rows of each side
are the same vector and one "negative" is really the positive. Prints how many loss calls."""
import argparse

import torch
from pytorch_metric_learning.losses import NTXentLoss
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--duplicate", action="store_true")
parser.add_argument("--steps", type=int, default=4)
args = parser.parse_args()

torch.manual_seed(0)
encoder = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
criterion = NTXentLoss(temperature=0.1)
optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
calls = 0
for step in range(args.steps):
    batch = torch.randn(8, 16)
    if args.duplicate:
        batch[5] = batch[3]
    embeddings = torch.cat([encoder(batch), encoder(batch.flip(-1))])
    labels = torch.arange(8).repeat(2)
    loss = criterion(embeddings, labels)
    calls += 1
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"loss calls: {calls}")
