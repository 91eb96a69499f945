"""A LightningModule whose training_step compares two views' embeddings with
``F.cosine_similarity``, trained by ``pl.Trainer`` on generated images for a few steps on the CPU
(no logger, no checkpoints). With ``--stale`` it has the article's bug: the partner is the
previous batch's first view, kept detached on the module (stale-partner). Prints how many
times training_step compared a pair."""
import argparse
import logging

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--stale", action="store_true")
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class PairModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 16))
        self.previous = None
        self.compared = 0

    def training_step(self, batch, batch_index):
        images, = batch
        first = self.encoder(images + 0.1 * torch.randn_like(images))
        second = self.encoder(images.flip(-1))
        partner = self.previous if args.stale and self.previous is not None else second
        similarity = F.cosine_similarity(first, partner, dim=1)
        self.compared += 1
        self.previous = first.detach()
        return (1 - similarity).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
data = DataLoader(TensorDataset(torch.rand(64, 3, 8, 8)), batch_size=8, shuffle=True)
module = PairModule()
trainer = pl.Trainer(
    max_steps=args.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False,
)
trainer.fit(module, data)
print(f"pairs compared: {module.compared}")
