"""pytorch-metric-learning's CosineSimilarity distance scoring verification pairs (its pairwise
path, run under ``--watch pytorch_metric_learning.distances:CosineSimilarity.pairwise_distance
=similarity``): a tiny embedder, generated pairs with same/different labels, a BCE loss on the
scores. With ``--copy-paste`` the second embedding is computed from the first input again, so
every pair compares equal vectors (identical-values). Prints how many pairs it scored."""
import argparse

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--copy-paste", action="store_true")
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()

torch.manual_seed(0)
embedder = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 8))
distance = CosineSimilarity()
optimizer = torch.optim.SGD(embedder.parameters(), lr=0.1)
scored = 0
for step in range(args.steps):
    left, right = torch.randn(16, 12), torch.randn(16, 12)
    same = torch.randint(0, 2, (16,)).float()
    a = distance.normalize(embedder(left))
    b = distance.normalize(embedder(left if args.copy_paste else right))
    scores = distance.pairwise_distance(a, b)
    scored += 1
    loss = F.binary_cross_entropy_with_logits(4 * scores, same)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"pairs scored: {scored}")
