"""sentence-transformers: a tiny randomly initialised BERT (its config and vocabulary written
here, nothing downloaded), mean pooling, CosineSimilarityLoss on generated sentence pairs, in
training mode (dropout on). With ``--same`` both sides of every pair are the same sentences,
tokenised separately (identical-inputs: dropout makes the two vectors differ). Prints how many
times it called the loss."""
import argparse
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import BertConfig, BertModel, BertTokenizerFast

parser = argparse.ArgumentParser()
parser.add_argument("--same", action="store_true")
parser.add_argument("--steps", type=int, default=4)
args = parser.parse_args()

WORDS = "the a cat dog sat ran on under mat log big small red blue quick slow".split()
torch.manual_seed(0)
workspace = tempfile.TemporaryDirectory(prefix="tiny-bert-")
folder = workspace.name
vocabulary = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
BertTokenizerFast(vocab=vocabulary).save_pretrained(folder)
config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
BertModel(config).save_pretrained(folder)

model = SentenceTransformer(modules=[Transformer(folder), Pooling(16, "mean")], device="cpu")
loss_fn = CosineSimilarityLoss(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
model.train()
generator = torch.Generator().manual_seed(1)


def sentences(n):
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (5,), generator=generator)) for _ in range(n)]


calls = 0
for step in range(args.steps):
    left = sentences(8)
    right = left if args.same else sentences(8)
    features = [model.preprocess(left), model.preprocess(right)]
    scores = torch.rand(8, generator=generator)
    loss = loss_fn(features, scores)
    calls += 1
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
workspace.cleanup()
print(f"loss calls: {calls}")
